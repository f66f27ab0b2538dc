//! The duration and cron parsers, and the schedules they make: the first line is a duration
//! (`every`, `timeout`, ...), the second a cron expression, the third its time zone. Whatever
//! parses must compute its next instants and plan a late start without a panic, and the
//! instants must move forward; a jittered one (the duration as its jitter) too, and its
//! description parses back to the same instants.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rota_core::schedule::{parse_duration, plan_due, Schedule};
use rota_core::outcome::MisfirePolicy;

/// 2026-12-05T00:00:00Z.
const NOW_MS: i64 = 1_796_428_800_000;

fn exercise(schedule: &Schedule) {
    let mut t = NOW_MS;
    for _ in 0..3 {
        match schedule.next_after(t) {
            Some(next) => {
                assert!(next > t, "next_after({t}) = {next} does not move forward");
                t = next;
            }
            None => break,
        }
    }
    let _ = schedule.instants_between(NOW_MS - 86_400_000, NOW_MS, 100);
    for policy in [MisfirePolicy::Skip, MisfirePolicy::RunOnce] {
        let plan = plan_due(
            schedule,
            NOW_MS - 3_600_000,
            NOW_MS,
            Duration::from_secs(5),
            policy,
            100,
        );
        assert!(plan.cursor >= NOW_MS - 3_600_000, "the cursor went back");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let duration = lines.next().unwrap_or_default();
    let cron = lines.next().unwrap_or_default();
    let zone = lines.next();
    let period = parse_duration(duration).ok();
    if let Some(period) = period {
        if let Ok(schedule) = Schedule::every(period) {
            exercise(&schedule);
            // The same duration as a jitter, over the cron line as a task's name.
            exercise(&schedule.jittered(cron, period));
        }
    }
    if let Ok(schedule) = Schedule::cron(cron, zone) {
        exercise(&schedule);
        if let Some(jitter) = period {
            let jittered = schedule.jittered(cron, jitter);
            exercise(&jittered);
            let back: Schedule = jittered.describe().parse().expect("a description parses back");
            assert_eq!(back.next_after(NOW_MS), jittered.next_after(NOW_MS));
        }
    }
});
