//! Schedules (cron with seconds, or fixed intervals) and the decision of which due instants
//! to start, which to record as misfired.
//!
//! All instants are Unix milliseconds of *store* time. Interval instants are aligned to the
//! Unix epoch (`k * period`), so every node computes the same instants whoever owns the task.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::outcome::MisfirePolicy;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression `{expr}`: {reason}; expected 6 fields `sec min hour day-of-month month day-of-week` (or 5 without seconds), e.g. \"0 0 12 * * *\"")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone `{0}`; use an IANA name such as \"Europe/Paris\" or \"UTC\"")]
    TimeZone(String),
    #[error("an interval is from 1ms to 3650d; got {0:?}")]
    Interval(Duration),
}

/// When a task fires: a cron expression or an interval, moved by a fixed offset when the
/// task has a `jitter` (see [`Schedule::jittered`]).
#[derive(Debug, Clone)]
pub struct Schedule {
    base: Base,
    /// Added to every instant of `base`; the same on every node.
    offset_ms: i64,
}

#[derive(Debug, Clone)]
enum Base {
    Cron {
        expr: String,
        tz: Tz,
        /// Shared by every schedule of the same expression (see [`compile_cron`]).
        compiled: Arc<cron::Schedule>,
    },
    Every {
        period: Duration,
    },
}

/// Distinct expressions the memo of [`compile_cron`] keeps, at most (more compile alone).
const CRON_MEMO_CAP: usize = 10_000;

/// A compiled cron expression, shared by every schedule that has it: a compiled expression
/// holds its fields' sets (about 400 bytes), and a node with 100,000 tasks usually has a
/// few dozen distinct expressions.
fn compile_cron(normalized: &str) -> Result<Arc<cron::Schedule>, String> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<cron::Schedule>>>> = OnceLock::new();
    let memo = COMPILED.get_or_init(Mutex::default);
    if let Some(compiled) = memo.lock().unwrap().get(normalized) {
        return Ok(compiled.clone());
    }
    let compiled = Arc::new(cron::Schedule::from_str(normalized).map_err(|e| e.to_string())?);
    let mut memo = memo.lock().unwrap();
    if memo.len() < CRON_MEMO_CAP {
        memo.insert(normalized.to_string(), compiled.clone());
    }
    Ok(compiled)
}

impl Schedule {
    /// A cron expression with seconds (`"0 0 12 * * *"`), or five fields without seconds
    /// (`"0 12 * * *"`, seconds = 0), in `tz` (UTC when `None`).
    pub fn cron(expr: &str, tz: Option<&str>) -> Result<Self, ScheduleError> {
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => {
                Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))?
            }
        };
        let fields = expr.split_whitespace().count();
        let normalized = if fields == 5 {
            format!("0 {expr}")
        } else {
            expr.to_string()
        };
        if !(6..=7).contains(&normalized.split_whitespace().count()) {
            return Err(ScheduleError::Cron {
                expr: expr.to_string(),
                reason: format!("it has {fields} fields"),
            });
        }
        let compiled = compile_cron(&normalized).map_err(|reason| ScheduleError::Cron {
            expr: expr.to_string(),
            reason,
        })?;
        Ok(Schedule {
            base: Base::Cron {
                expr: expr.to_string(),
                tz,
                compiled,
            },
            offset_ms: 0,
        })
    }

    /// Fires every `period`, at instants aligned to the Unix epoch.
    pub fn every(period: Duration) -> Result<Self, ScheduleError> {
        if period.as_millis() == 0 || period > MAX_DURATION {
            return Err(ScheduleError::Interval(period));
        }
        Ok(Schedule {
            base: Base::Every { period },
            offset_ms: 0,
        })
    }

    /// This schedule with every instant moved by an offset in `[0, jitter)` derived from
    /// `task`'s name: tasks sharing a schedule spread over `jitter`, and every node computes
    /// the same instants for one task (so claims and fencing are unchanged).
    pub fn jittered(mut self, task: &str, jitter: Duration) -> Schedule {
        let span = jitter.as_millis() as u64;
        self.offset_ms = if span == 0 {
            0
        } else {
            (crate::names::stable_hash(task.as_bytes()) % span) as i64
        };
        self
    }

    /// The offset every instant is moved by (0 without jitter).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// The interval of an `every` schedule.
    pub fn period(&self) -> Option<Duration> {
        match &self.base {
            Base::Every { period } => Some(*period),
            Base::Cron { .. } => None,
        }
    }

    /// The first instant strictly after `after_ms`, or `None` if the schedule has no more.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        self.base
            .next_after(after_ms.checked_sub(self.offset_ms)?)
            .and_then(|t| t.checked_add(self.offset_ms))
    }

    /// The key of a run-now fire in the task's history: the time it is due, moved past any
    /// instant of this schedule (which keeps its own record). Every node computes the same.
    /// `None` only for a schedule with an instant in each of the next 1,000 milliseconds.
    pub fn manual_key(&self, due_ms: i64) -> Option<i64> {
        (due_ms..due_ms + 1000).find(|&k| self.next_after(k - 1) != Some(k))
    }

    /// The instants in `(after_ms, until_ms]`, oldest first, at most `cap` of them.
    pub fn instants_between(&self, after_ms: i64, until_ms: i64, cap: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = after_ms;
        while out.len() < cap {
            match self.next_after(at) {
                Some(next) if next <= until_ms => {
                    out.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        out
    }

    /// Human text, also part of a task's definition hash.
    pub fn describe(&self) -> String {
        let base = match &self.base {
            Base::Every { period } => format!("every {}", format_duration(*period)),
            Base::Cron { expr, tz, .. } if *tz == Tz::UTC => format!("cron \"{expr}\""),
            Base::Cron { expr, tz, .. } => format!("cron \"{expr}\" {tz}"),
        };
        match self.offset_ms {
            0 => base,
            offset => format!("{base} {OFFSET}{offset}ms"),
        }
    }
}

/// How [`Schedule::describe`] writes a jitter's offset.
const OFFSET: &str = "+";

impl Base {
    fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Base::Every { period } => {
                let p = period.as_millis() as i64;
                Some((after_ms.div_euclid(p) + 1) * p)
            }
            Base::Cron { tz, compiled, .. } => {
                let after: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms).single()?;
                let local = after.with_timezone(tz);
                // cron works in whole seconds; skip instants that are not strictly later.
                compiled
                    .after(&local)
                    .map(|t| t.timestamp_millis())
                    .find(|&t| t > after_ms)
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = String;

    /// Parses what [`Schedule::describe`] writes (`every 5s`, `cron "0 0 12 * * *" Europe/Paris`),
    /// so tools can compute next fires from the declarations in the store.
    fn from_str(text: &str) -> Result<Self, String> {
        // A jitter's offset ends the text: ` +1234ms`.
        if let Some((base, offset)) = text.rsplit_once(&format!(" {OFFSET}")) {
            if let Some(ms) = offset
                .strip_suffix("ms")
                .and_then(|n| n.parse::<i64>().ok())
            {
                let mut schedule: Schedule = base.parse()?;
                schedule.offset_ms = ms;
                return Ok(schedule);
            }
        }
        if let Some(period) = text.strip_prefix("every ") {
            return Schedule::every(parse_duration(period)?).map_err(|e| e.to_string());
        }
        let rest = text
            .strip_prefix("cron \"")
            .ok_or_else(|| format!("`{text}` is not a schedule"))?;
        let (expr, tz) = rest
            .split_once('"')
            .ok_or_else(|| format!("`{text}` has no closing quote"))?;
        let tz = tz.trim();
        Schedule::cron(expr, (!tz.is_empty()).then_some(tz)).map_err(|e| e.to_string())
    }
}

/// Formats a duration the way config accepts it: `250ms`, `5s`, `2m`, `1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The longest duration rota takes anywhere (an interval, a timeout, a time to live): ten
/// years. A longer one is a mistake, and would overflow the arithmetic on instants.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses `250ms`, `5s`, `2m`, `1h`, `1d` (integer with a unit), up to [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let too_long = || format!("`{text}` is longer than 3650d, the longest duration rota takes");
    if num.is_empty() {
        return Err(format!(
            "`{text}` is not a duration; write a whole number with a unit: 250ms, 5s, 2m, 1h, 1d"
        ));
    }
    // Only digits: the one way parsing fails is a number too large for u64.
    let n: u64 = num.parse().map_err(|_| too_long())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has no known unit; write 250ms, 5s, 2m, 1h or 1d"
            ))
        }
    };
    match n.checked_mul(unit_ms).map(Duration::from_millis) {
        Some(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(too_long()),
    }
}

/// What the scheduler does with the instants due at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DuePlan {
    /// Instants to record as misfired, oldest first, at most `cap` of them.
    pub misfired: Vec<i64>,
    /// How many instants misfired in all (`misfired` lists the first `cap`).
    pub misfired_total: u64,
    /// Instants to start now: late but within the threshold, or the one `run-once` keeps.
    pub start: Vec<i64>,
    /// The last instant this plan accounts for: the scheduler's new cursor.
    pub cursor: i64,
}

/// Decides, for the instants in `(cursor, now]`, which start and which are misfired.
///
/// Instants no more than `threshold` behind `now` are started (late). Older ones are
/// misfired; with `RunOnce`, when nothing recent is due, the newest misfired instant is
/// started anyway, once. Long outages of fast schedules are counted, not enumerated.
pub fn plan_due(
    schedule: &Schedule,
    cursor: i64,
    now: i64,
    threshold: Duration,
    policy: MisfirePolicy,
    cap: usize,
) -> DuePlan {
    let misfire_before = now - threshold.as_millis() as i64;
    let mut plan = DuePlan {
        cursor,
        ..DuePlan::default()
    };
    let mut newest_misfire = None;
    let mut t = cursor;
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        if next < misfire_before {
            if plan.misfired.len() < cap {
                plan.misfired.push(next);
                plan.misfired_total += 1;
                t = next;
            } else if let Some(period) = schedule.period() {
                // Count the rest of the misfired run arithmetically.
                let p = period.as_millis() as i64;
                let last = next + (misfire_before - 1 - next) / p * p;
                plan.misfired_total += ((last - next) / p + 1) as u64;
                t = last;
            } else {
                plan.misfired_total += 1;
                t = next;
            }
            newest_misfire = Some(t);
        } else {
            plan.start.push(next);
            t = next;
        }
        plan.cursor = t;
    }
    if let (MisfirePolicy::RunOnce, Some(newest), true) =
        (policy, newest_misfire, plan.start.is_empty())
    {
        if plan.misfired.last() == Some(&newest) {
            plan.misfired.pop();
        }
        plan.misfired_total -= 1;
        plan.start.push(newest);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn interval_instants_are_epoch_aligned_and_strictly_after() {
        let s = Schedule::every(Duration::from_secs(5)).unwrap();
        assert_eq!(s.next_after(0), Some(5 * S));
        assert_eq!(s.next_after(4_999), Some(5 * S));
        assert_eq!(s.next_after(5 * S), Some(10 * S));
        assert_eq!(s.next_after(-1), Some(0));
    }

    #[test]
    fn cron_with_seconds_and_five_field_form() {
        let s = Schedule::cron("*/10 * * * * *", None).unwrap();
        assert_eq!(s.next_after(0), Some(10 * S));
        assert_eq!(s.next_after(10 * S), Some(20 * S));
        assert_eq!(s.next_after(10 * S + 1), Some(20 * S));
        let noon = Schedule::cron("0 12 * * *", None).unwrap();
        assert_eq!(noon.next_after(0), Some(12 * 3600 * S));
    }

    #[test]
    fn cron_respects_time_zone() {
        // Noon in Paris on 1970-01-01 is 11:00 UTC (CET, UTC+1).
        let s = Schedule::cron("0 0 12 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(s.next_after(0), Some(11 * 3600 * S));
        assert!(matches!(
            Schedule::cron("0 0 12 * * *", Some("Mars/Base")),
            Err(ScheduleError::TimeZone(_))
        ));
    }

    #[test]
    fn a_jitter_moves_every_instant_by_one_offset_of_the_tasks_name() {
        let hourly = || Schedule::every(Duration::from_secs(3600)).unwrap();
        let jitter = Duration::from_secs(30);
        let a = hourly().jittered("send-invoices", jitter);
        let again = hourly().jittered("send-invoices", jitter);
        let offset = a.offset_ms();
        assert!((0..30 * S).contains(&offset), "{offset}");
        assert_eq!(
            again.offset_ms(),
            offset,
            "every node computes the same offset"
        );
        assert_eq!(a.next_after(0), Some(offset));
        assert_eq!(a.next_after(3600 * S + offset - 1), Some(3600 * S + offset));
        assert_eq!(a.next_after(3600 * S + offset), Some(7200 * S + offset));
        // Tasks of one schedule spread over the jitter.
        let offsets: std::collections::BTreeSet<i64> = (0..50)
            .map(|i| hourly().jittered(&format!("task-{i}"), jitter).offset_ms())
            .collect();
        assert!(offsets.len() > 40, "{offsets:?}");
        assert!(offsets.iter().all(|o| (0..30 * S).contains(o)));
        // A cron instant moves too; no jitter is no offset.
        let noon = Schedule::cron("0 0 12 * * *", None).unwrap();
        assert_eq!(
            noon.clone().jittered("ftp", jitter).next_after(0),
            Some(12 * 3600 * S + noon.clone().jittered("ftp", jitter).offset_ms()),
        );
        assert_eq!(noon.jittered("ftp", Duration::ZERO).offset_ms(), 0);
        // The misfire plan counts a long outage of a jittered schedule the same way.
        let fast = Schedule::every(Duration::from_millis(10))
            .unwrap()
            .jittered("t", Duration::from_millis(10));
        let plan = plan_due(
            &fast,
            0,
            1_000_000,
            Duration::from_secs(1),
            MisfirePolicy::Skip,
            5,
        );
        assert_eq!(plan.misfired_total + plan.start.len() as u64, 100_000);
    }

    #[test]
    fn bad_cron_is_explained() {
        let err = Schedule::cron("0 0 25 * * *", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 0 25 * * *"), "{err}");
        let err = Schedule::cron("* *", None).unwrap_err().to_string();
        assert!(err.contains("2 fields"), "{err}");
        assert!(Schedule::every(Duration::ZERO).is_err());
    }

    #[test]
    fn descriptions_parse_back() {
        for s in [
            Schedule::every(Duration::from_millis(1500)).unwrap(),
            Schedule::cron("0 0 12 * * *", None).unwrap(),
            Schedule::cron("0 30 9 * * Mon-Fri", Some("Europe/Paris")).unwrap(),
            Schedule::every(Duration::from_secs(60))
                .unwrap()
                .jittered("report", Duration::from_secs(30)),
            Schedule::cron("0 0 12 * * *", Some("Etc/GMT+5"))
                .unwrap()
                .jittered("ftp", Duration::from_secs(600)),
        ] {
            let back: Schedule = s.describe().parse().unwrap();
            assert_eq!(back.describe(), s.describe());
            assert_eq!(back.next_after(0), s.next_after(0));
        }
    }

    #[test]
    fn durations_round_trip() {
        for text in ["250ms", "5s", "2m", "1h"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
        for huge in [
            "3651d",
            "200000000000d",
            "18446744073709551615d",
            "99999999999999999999999ms",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains(huge) && e.contains("longer than 3650d"), "{e}");
        }
        assert!(Schedule::every(MAX_DURATION + Duration::from_millis(1)).is_err());
        assert!(Schedule::every(Duration::MAX).is_err());
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("not a duration"));
    }

    fn every_second() -> Schedule {
        Schedule::every(Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn on_time_and_slightly_late_instants_start() {
        let plan = plan_due(
            &every_second(),
            10 * S,
            12 * S + 300,
            Duration::from_secs(5),
            MisfirePolicy::Skip,
            100,
        );
        assert_eq!(plan.start, vec![11 * S, 12 * S]);
        assert!(plan.misfired.is_empty());
        assert_eq!(plan.cursor, 12 * S);
    }

    #[test]
    fn instants_between_are_bounded_on_both_sides_and_capped() {
        let s = Schedule::every(Duration::from_secs(1)).unwrap();
        assert_eq!(
            s.instants_between(1_000, 4_000, 10),
            vec![2_000, 3_000, 4_000]
        );
        assert_eq!(s.instants_between(1_000, 4_000, 2), vec![2_000, 3_000]);
        assert!(s.instants_between(4_000, 4_000, 10).is_empty());
    }

    #[test]
    fn nothing_due_keeps_cursor() {
        let plan = plan_due(
            &every_second(),
            10 * S,
            10 * S + 999,
            Duration::from_secs(5),
            MisfirePolicy::Skip,
            100,
        );
        assert_eq!(
            plan,
            DuePlan {
                cursor: 10 * S,
                ..DuePlan::default()
            }
        );
    }

    #[test]
    fn skip_policy_records_every_old_instant_and_starts_recent_ones() {
        let plan = plan_due(
            &every_second(),
            0,
            10 * S,
            Duration::from_secs(3),
            MisfirePolicy::Skip,
            100,
        );
        assert_eq!(plan.misfired, (1..=6).map(|i| i * S).collect::<Vec<_>>());
        assert_eq!(plan.misfired_total, 6);
        assert_eq!(plan.start, vec![7 * S, 8 * S, 9 * S, 10 * S]);
        assert_eq!(plan.cursor, 10 * S);
    }

    #[test]
    fn run_once_starts_newest_misfire_only_when_nothing_recent_is_due() {
        let daily = Schedule::every(Duration::from_secs(3600)).unwrap();
        let now = 3 * 3600 * S + 60 * S; // three instants missed by more than the threshold
        let plan = plan_due(
            &daily,
            0,
            now,
            Duration::from_secs(5),
            MisfirePolicy::RunOnce,
            100,
        );
        assert_eq!(plan.misfired, vec![3600 * S, 2 * 3600 * S]);
        assert_eq!(plan.start, vec![3 * 3600 * S]);
        let skip = plan_due(
            &daily,
            0,
            now,
            Duration::from_secs(5),
            MisfirePolicy::Skip,
            100,
        );
        assert_eq!(skip.misfired, vec![3600 * S, 2 * 3600 * S, 3 * 3600 * S]);
        assert!(skip.start.is_empty());
    }

    #[test]
    fn long_outage_is_counted_without_enumerating_every_instant() {
        let plan = plan_due(
            &every_second(),
            0,
            86_400 * S,
            Duration::from_secs(5),
            MisfirePolicy::Skip,
            10,
        );
        assert_eq!(plan.misfired, (1..=10).map(|i| i * S).collect::<Vec<_>>());
        assert_eq!(
            plan.misfired_total,
            86_400 - 6,
            "every instant older than the threshold is counted"
        );
        assert_eq!(
            plan.start,
            ((86_400 - 5)..=86_400).map(|i| i * S).collect::<Vec<_>>()
        );
        assert_eq!(plan.cursor, 86_400 * S);
    }

    #[test]
    fn a_run_now_key_is_its_due_time_off_the_schedules_instants() {
        let every = Schedule::every(std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(every.manual_key(5_500), Some(5_500));
        assert_eq!(
            every.manual_key(6_000),
            Some(6_001),
            "6,000 is a scheduled instant"
        );
        let cron = Schedule::cron("* * * * * *", None).unwrap();
        assert_eq!(cron.manual_key(7_000), Some(7_001));
        let every_ms = Schedule::every(std::time::Duration::from_millis(1)).unwrap();
        assert_eq!(
            every_ms.manual_key(7_000),
            None,
            "every millisecond is an instant"
        );
    }
}
