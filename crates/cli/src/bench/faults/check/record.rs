//! The record the work writes itself: one line per start and end of a run (a task's fire, a
//! file's handling, the command service), parsed.

use serde::Serialize;

/// Which end of a run a record line marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    Start,
    End,
    /// The run did its whole work (a file's handler only: see `services::UNIT_SCRIPT`).
    Done,
}

impl Mark {
    /// As a context line shows it.
    pub(super) fn label(self) -> &'static str {
        match self {
            Mark::Start => "START",
            Mark::End => "END  ",
            Mark::Done => "DONE ",
        }
    }
}

/// The fields of a record line, `MARK a b node pid node_pid attempt token time_us`, whose mark
/// is `start` or `end`; `None` for a partial or foreign line.
pub(super) fn fields<'l>(line: &'l str, marks: &[(&str, Mark)]) -> Option<(Mark, [&'l str; 8])> {
    let mut p = line.split_whitespace();
    let tag = p.next()?;
    let (_, mark) = marks.iter().find(|(t, _)| *t == tag)?;
    let mark = *mark;
    let fields: Vec<&str> = p.collect();
    Some((mark, fields.try_into().ok()?))
}

/// What the checker reads alike in a task's record line and a service's ([`UnitLine`]).
pub(super) trait Line {
    fn mark(&self) -> Mark;
    fn node(&self) -> &str;
    /// The run's own process.
    fn pid(&self) -> u32;
    /// The node process that started the run.
    fn node_pid(&self) -> u32;
    fn attempt(&self) -> i64;
    fn token(&self) -> i64;
    fn at_ms(&self) -> i64;
}

macro_rules! impl_line {
    ($($t:ty),*) => {$(
        impl Line for $t {
            fn mark(&self) -> Mark {
                self.mark
            }
            fn node(&self) -> &str {
                &self.node
            }
            fn pid(&self) -> u32 {
                self.pid
            }
            fn node_pid(&self) -> u32 {
                self.node_pid
            }
            fn attempt(&self) -> i64 {
                self.attempt
            }
            fn token(&self) -> i64 {
                self.token
            }
            fn at_ms(&self) -> i64 {
                self.at_ms
            }
        }
    )*};
}
impl_line!(RecordLine, UnitLine);

/// One line of the campaign's record file:
/// `S|E task instant node pid node_pid attempt token time_us`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordLine {
    pub mark: Mark,
    pub task: String,
    pub instant_ms: i64,
    pub node: String,
    /// The run's own process (one per run).
    pub pid: u32,
    /// The node process that started the run.
    pub node_pid: u32,
    pub attempt: i64,
    pub token: i64,
    /// Wall clock, Unix ms.
    pub at_ms: i64,
}

impl RecordLine {
    /// Parses one line; `None` for a partial or foreign line.
    pub fn parse(line: &str) -> Option<RecordLine> {
        let (mark, [task, instant, node, pid, node_pid, attempt, token, at]) =
            fields(line, &[("S", Mark::Start), ("E", Mark::End)])?;
        Some(RecordLine {
            mark,
            task: task.to_string(),
            instant_ms: instant.parse().ok()?,
            node: node.to_string(),
            pid: pid.parse().ok()?,
            node_pid: node_pid.parse().ok()?,
            attempt: attempt.parse().ok()?,
            token: token.parse().ok()?,
            at_ms: at.parse::<i64>().ok()? / 1000,
        })
    }
}

/// Every complete line of a record file, in file order.
pub fn parse_record(text: &str) -> Vec<RecordLine> {
    text.lines().filter_map(RecordLine::parse).collect()
}

/// One line a service's work wrote:
/// `US|UE|UD service key node pid node_pid attempt token time_us` (`UD`: a file's handler
/// did its whole work). For a file the key is the
/// file's name and the attempt `ROTA_ATTEMPT`; for a command service the key is the service
/// and the attempt its restart count (`ROTA_RESTARTS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitLine {
    pub mark: Mark,
    pub service: String,
    pub key: String,
    pub node: String,
    pub pid: u32,
    pub node_pid: u32,
    pub attempt: i64,
    pub token: i64,
    /// Wall clock, Unix ms.
    pub at_ms: i64,
}
impl UnitLine {
    /// Parses one line; `None` for a partial or foreign line.
    pub fn parse(line: &str) -> Option<UnitLine> {
        let (mark, [service, key, node, pid, node_pid, attempt, token, at]) = fields(
            line,
            &[("US", Mark::Start), ("UE", Mark::End), ("UD", Mark::Done)],
        )?;
        Some(UnitLine {
            mark,
            service: service.to_string(),
            key: key.to_string(),
            node: node.to_string(),
            pid: pid.parse().ok()?,
            node_pid: node_pid.parse().ok()?,
            attempt: attempt.parse().ok()?,
            token: token.parse().ok()?,
            at_ms: at.parse::<i64>().ok()? / 1000,
        })
    }

    /// The run: `service key`.
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.service, self.key)
    }
}
/// Every complete unit line of a record file, in file order.
pub fn parse_units(text: &str) -> Vec<UnitLine> {
    text.lines().filter_map(UnitLine::parse).collect()
}
