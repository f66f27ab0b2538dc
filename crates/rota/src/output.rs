//! What a fire's work wrote (a command's stdout and stderr), kept per fire and attempt in the
//! cluster cache: the last bytes of each stream up to the task's limit, written while the fire
//! runs (so that it can be followed live) and once more when it ends, before its outcome.
//! Entries expire with the history. Output is kept as bytes and shown as text; it is never
//! read as log lines.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tracing::debug;

use crate::{
    error::Result,
    store::{CacheWrite, Expect, Store},
};

/// The cache that holds fires' output, under [`output_key`].
pub const OUTPUT_CACHE: &str = "rota.output";

/// What a task keeps of each stream of a fire when it does not say (`output_limit`).
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// The most a task may keep of each stream: both fit in one cache entry.
pub const MAX_OUTPUT_LIMIT: usize = 200 * 1024;

/// How often a running fire's output is written, at most.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The cache key of the output of `attempt` of the fire of `task` at `instant_ms`: sorted
/// by instant, then attempt.
pub fn output_key(task: &str, instant_ms: i64, attempt: i64) -> String {
    format!("{task}/{instant_ms:013}/{attempt}")
}

/// Which stream of the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One fire's output as kept: the tail of each stream and how much was written in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FireOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes written to stdout in all (more than `stdout.len()` when the head was dropped).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// The work has ended: nothing more will be written.
    pub done: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    stdout_bytes: u64,
    stderr_bytes: u64,
    stdout_len: usize,
    done: bool,
}

impl FireOutput {
    /// The cache entry's bytes: a JSON header line, then stdout's tail, then stderr's.
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            stdout_len: self.stdout.len(),
            done: self.done,
        };
        let mut out = serde_json::to_vec(&header).expect("a plain struct");
        out.push(b'\n');
        out.extend_from_slice(&self.stdout);
        out.extend_from_slice(&self.stderr);
        out
    }

    /// Reads what [`FireOutput::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<FireOutput> {
        let newline = bytes.iter().position(|b| *b == b'\n')?;
        let header: Header = serde_json::from_slice(&bytes[..newline]).ok()?;
        let body = &bytes[newline + 1..];
        if header.stdout_len > body.len() {
            return None;
        }
        let (stdout, stderr) = body.split_at(header.stdout_len);
        Some(FireOutput {
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            stdout_bytes: header.stdout_bytes.max(stdout.len() as u64),
            stderr_bytes: header.stderr_bytes.max(stderr.len() as u64),
            done: header.done,
        })
    }

    /// The bytes of `stream` written after the first `from` (as far as the tail still holds
    /// them), and how many written after `from` are no longer kept.
    pub fn after(&self, stream: Stream, from: u64) -> (&[u8], u64) {
        let (tail, total) = match stream {
            Stream::Stdout => (&self.stdout, self.stdout_bytes),
            Stream::Stderr => (&self.stderr, self.stderr_bytes),
        };
        let head = total - tail.len() as u64; // bytes dropped before the tail
        let from = from.min(total);
        if from >= head {
            (&tail[(from - head) as usize..], 0)
        } else {
            (&tail[..], head - from)
        }
    }

    fn push(&mut self, stream: Stream, bytes: &[u8], limit: usize) {
        let (tail, total) = match stream {
            Stream::Stdout => (&mut self.stdout, &mut self.stdout_bytes),
            Stream::Stderr => (&mut self.stderr, &mut self.stderr_bytes),
        };
        *total += bytes.len() as u64;
        tail.extend_from_slice(bytes);
        if tail.len() > limit {
            let excess = tail.len() - limit;
            tail.drain(..excess);
        }
    }
}

/// Keeps a running fire's output and writes it to the cache: at most once a second while
/// the work runs, and once more at [`OutputRecorder::finish`]. Nothing is written for work
/// that writes nothing.
#[derive(Clone)]
pub struct OutputRecorder {
    inner: Arc<Recorder>,
}

impl std::fmt::Debug for OutputRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputRecorder")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

struct Recorder {
    store: Arc<dyn Store>,
    cluster: String,
    key: String,
    limit: usize,
    ttl_ms: i64,
    state: Mutex<Kept>,
    changed: Notify,
    /// One write at a time, each of the state as it is then: a running fire's write never
    /// lands after the final one.
    writing: tokio::sync::Mutex<()>,
    flusher: std::sync::Once,
}

#[derive(Default)]
struct Kept {
    output: FireOutput,
    /// Written since the last flush.
    dirty: bool,
}

impl OutputRecorder {
    /// A recorder for `key` in `cluster`, keeping `limit` bytes of each stream, whose entry
    /// expires after `ttl`. Its flusher starts with the first output (work that writes
    /// nothing costs nothing) and runs until [`OutputRecorder::finish`].
    pub(crate) fn new(
        store: Arc<dyn Store>,
        cluster: &str,
        key: String,
        limit: usize,
        ttl: Duration,
    ) -> OutputRecorder {
        OutputRecorder {
            inner: Arc::new(Recorder {
                store,
                cluster: cluster.to_string(),
                key,
                limit,
                ttl_ms: ttl.as_millis() as i64,
                state: Mutex::default(),
                changed: Notify::new(),
                writing: tokio::sync::Mutex::new(()),
                flusher: std::sync::Once::new(),
            }),
        }
    }

    /// Adds what the work wrote to `stream`.
    pub fn append(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut kept = self.inner.state.lock().unwrap();
        kept.output.push(stream, bytes, self.inner.limit);
        kept.dirty = true;
        drop(kept);
        self.inner.flusher.call_once(|| {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                loop {
                    inner.changed.notified().await;
                    if inner.state.lock().unwrap().output.done {
                        return; // `finish` writes the last of it
                    }
                    if let Err(e) = inner.write(false).await {
                        debug!(error = %e, key = %inner.key, "could not write a running fire's output");
                    }
                    tokio::time::sleep(FLUSH_EVERY).await;
                }
            });
        });
        self.inner.changed.notify_one();
    }

    /// Marks the output complete and writes it, if the work wrote anything. Called when the
    /// work has ended, before its outcome is recorded.
    pub(crate) async fn finish(&self) {
        let wrote = {
            let mut kept = self.inner.state.lock().unwrap();
            kept.output.done = true;
            kept.dirty = true;
            kept.output.stdout_bytes + kept.output.stderr_bytes > 0
        };
        self.inner.changed.notify_one(); // the flusher sees `done` and ends
        if !wrote {
            return;
        }
        let mut delay = Duration::from_millis(50);
        for _ in 0..5 {
            match self.inner.write(true).await {
                Ok(()) => return,
                Err(e) => {
                    debug!(error = %e, key = %self.inner.key, "could not write a fire's output");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

impl Recorder {
    /// Writes the output as it is now, if it changed since the last write; a running fire's
    /// write (`last` false) only while the fire has not finished.
    async fn write(&self, last: bool) -> Result<()> {
        let _one = self.writing.lock().await;
        let value = {
            let mut kept = self.state.lock().unwrap();
            if !kept.dirty || (!last && kept.output.done) {
                return Ok(());
            }
            kept.dirty = false;
            kept.output.encode()
        };
        let write = CacheWrite {
            cache: OUTPUT_CACHE,
            key: &self.key,
            value: &value,
            ttl_ms: Some(self.ttl_ms),
            expect: Expect::Any,
        };
        match self.store.cache_put(&self.cluster, &write).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.state.lock().unwrap().dirty = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_each_stream_is_kept_with_the_count_of_all() {
        let mut out = FireOutput::default();
        out.push(Stream::Stdout, b"hello ", 8);
        out.push(Stream::Stdout, b"world\n", 8);
        out.push(Stream::Stderr, b"\xffbad\n", 8);
        assert_eq!(out.stdout, b"o world\n");
        assert_eq!((out.stdout_bytes, out.stderr_bytes), (12, 5));
        let back = FireOutput::decode(&out.encode()).unwrap();
        assert_eq!(back, out);
        assert_eq!(FireOutput::decode(b"not output"), None);
        assert_eq!(
            FireOutput::decode(
                b"{\"stdout_bytes\":1,\"stderr_bytes\":0,\"stdout_len\":9,\"done\":true}\nab"
            ),
            None
        );
        // Following: what came after what was shown, and what was dropped meanwhile.
        assert_eq!(out.after(Stream::Stdout, 0), (&b"o world\n"[..], 4));
        assert_eq!(out.after(Stream::Stdout, 6), (&b"world\n"[..], 0));
        assert_eq!(out.after(Stream::Stdout, 12), (&b""[..], 0));
        assert_eq!(out.after(Stream::Stdout, 99), (&b""[..], 0));
        assert_eq!(output_key("t", 5, 2), "t/0000000000005/2");
    }
}
