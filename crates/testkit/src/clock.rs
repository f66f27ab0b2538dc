//! A wall clock that the harness can step under a running process: libfaketime preloaded,
//! reading its offset from a file the harness rewrites. Monotonic clocks stay real, as leases
//! run on them; only the time of day moves, as under an NTP step.

use std::{
    io,
    path::{Path, PathBuf},
};

/// libfaketime's multi-threaded library, if installed (`apt-get install faketime`).
pub fn libfaketime() -> Option<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
        .find(|p| p.exists())
}

/// One offset file, shared by every process started with [`FakeClock::env`].
pub struct FakeClock {
    library: PathBuf,
    file: PathBuf,
}

impl FakeClock {
    /// A clock at offset zero, kept in `file`. `None` when libfaketime is not installed.
    pub fn new(file: impl Into<PathBuf>) -> io::Result<Option<FakeClock>> {
        let Some(library) = libfaketime() else {
            return Ok(None);
        };
        let clock = FakeClock {
            library,
            file: file.into(),
        };
        clock.set_offset_ms(0)?;
        Ok(Some(clock))
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The environment that puts a process on this clock. The file is read at every clock
    /// call, so a step reaches every process at once.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with(("FAKETIME_NO_CACHE", "1"))
    }

    /// [`FakeClock::env`] for a JVM, which reads the time of day very often: the file is read
    /// at most once a second, so a step reaches it within a second. And libfaketime's
    /// "monotonic fix", which it turns on by itself for this glibc, is turned off: with it, the
    /// JVM's timed waits (on monotonic condition variables) returned at once, and every
    /// thread that waits with a timeout spun (a ZooKeeper server idle under it used half a
    /// core, against 0.1 % without; three of them starved a 2-core machine).
    pub fn env_for_jvm(&self) -> Vec<(String, String)> {
        let mut env = self.env_with(("FAKETIME_CACHE_DURATION", "1"));
        env.push(("FAKETIME_FORCE_MONOTONIC_FIX".into(), "0".into()));
        env
    }

    fn env_with(&self, cache: (&str, &str)) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            (cache.0, cache.1.to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into()
    }

    /// Steps the clock to `offset_ms` from real time. Written to a side file and renamed,
    /// so that no reader sees half an offset.
    pub fn set_offset_ms(&self, offset_ms: i64) -> io::Result<()> {
        let sign = if offset_ms < 0 { '-' } else { '+' };
        let abs = offset_ms.unsigned_abs();
        let text = format!("{sign}{}.{:03}\n", abs / 1000, abs % 1000);
        let side = self.file.with_extension("next");
        std::fs::write(&side, text)?;
        std::fs::rename(&side, &self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_written_in_libfaketimes_seconds() {
        let dir = std::env::temp_dir().join(format!("rota-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clock = FakeClock {
            library: PathBuf::from("/nonexistent"),
            file: dir.join("clock.rc"),
        };
        for (ms, text) in [
            (0, "+0.000\n"),
            (1500, "+1.500\n"),
            (-2050, "-2.050\n"),
            (-300_000, "-300.000\n"),
        ] {
            clock.set_offset_ms(ms).unwrap();
            assert_eq!(std::fs::read_to_string(clock.file()).unwrap(), text);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
