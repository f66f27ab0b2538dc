//! The `file-inbound` service: polls a directory and hands each file to a command or an
//! HTTP endpoint, then moves it to a done or a failed directory.
//!
//! Each file is an item of the service ([`ServiceContext::begin_item`]), claimed in the store
//! under the service's fencing token before it is handed over: a node that lost the service
//! cannot take a file, and no file is handed over twice, except once more after its node
//! died while handling it (recovery `retry`; with `abandon`, the default, it goes to the
//! failed directory). A file whose handling a graceful handover interrupts (the service
//! moves, drains, pauses or stops; its handler gets SIGTERM and the service's grace) is
//! given back, and the next owner hands it over again as the next attempt.
//! The outcome is recorded before the file is moved, so a node dying between the two leaves
//! the move to the next owner, without handling the file again.
//!
//! The service's progress (files handled and failed, the last one and when) is its state in
//! the store ([`ServiceContext::state`]): the next owner carries the counts on after a
//! failover, and `rota ctl cache get rota.task-state <service>` shows them.
//!
//! Files whose name starts with `.` are ignored: write a file under such a name, then rename
//! it into place, so that it is never picked up half-written. The three directories must be
//! on one file system (a move is a rename), shared by every node that may run the service.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::{debug, info, warn};

use super::{command::CommandTask, http::HttpTask, invocation::Invocation};
use crate::{
    service::{ItemStart, ServiceContext, MAX_ITEM_KEY},
    task::{Outcome, TaskError},
};

/// What the service has done, kept as its state so that it survives failover.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub handled: u64,
    pub failed: u64,
    pub last_file: Option<String>,
    /// Unix milliseconds (this node's clock) when the last file was handled.
    pub last_at_ms: Option<i64>,
}

/// Where a file goes.
#[derive(Debug, Clone)]
pub enum FileHandler {
    /// Runs the command with `ROTA_FILE` (the path), `ROTA_FILE_NAME`, `ROTA_SERVICE`,
    /// `ROTA_NODE`, `ROTA_FENCING_TOKEN` and `ROTA_ATTEMPT` set; exit status 0 is success.
    Command(CommandTask),
    /// Sends the file as the request body with `X-Rota-File-Name`, `X-Rota-Fencing-Token`,
    /// ... headers; any 2xx answer is success.
    Http(HttpTask),
}

#[derive(Debug, Clone)]
pub struct FileInbound {
    pub dir: PathBuf,
    pub done: PathBuf,
    pub failed: PathBuf,
    /// How often the directory is listed.
    pub poll: Duration,
    pub handler: FileHandler,
}

impl FileInbound {
    /// One line describing the service; part of its definition hash.
    pub fn description(&self) -> String {
        let to = match &self.handler {
            FileHandler::Command(c) => c.description(),
            FileHandler::Http(h) => h.description(),
        };
        format!(
            "file-inbound {} -> {} (done {}, failed {})",
            self.dir.display(),
            to,
            self.done.display(),
            self.failed.display()
        )
    }

    /// Polls until the service is cancelled or this node no longer owns it.
    pub async fn run(&self, ctx: ServiceContext) -> Result<(), TaskError> {
        for dir in [&self.done, &self.failed] {
            std::fs::create_dir_all(dir)
                .map_err(|e| TaskError::new(format!("cannot create {}: {e}", dir.display())))?;
        }
        info!(dir = %self.dir.display(), "watching for files");
        let mut progress: Progress = match ctx.state().load_json().await {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "cannot read the saved progress; counting from zero");
                Progress::default()
            }
        };
        // Files whose last attempt met an error (the store's or the file system's): tried
        // after the others, so that one stuck file never holds up the rest.
        let mut troubled = HashSet::new();
        loop {
            if !ctx.still_owner() {
                return Ok(());
            }
            match self.sweep(&ctx, &mut progress, &mut troubled).await {
                Ok(true) => {}
                Ok(false) => return Ok(()), // no longer the owner
                Err(e) => warn!(error = %e, "file sweep interrupted; retrying at the next poll"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// Handles every file present now, oldest name first (troubled ones last).
    /// `Ok(false)`: ownership was lost.
    async fn sweep(
        &self,
        ctx: &ServiceContext,
        progress: &mut Progress,
        troubled: &mut HashSet<String>,
    ) -> Result<bool, String> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("cannot list {}: {e}", self.dir.display()))?;
        for entry in entries.flatten() {
            let (name, meta) = match entry.file_name().into_string() {
                Ok(name) => (name, entry.metadata()),
                Err(raw) => match give_utf8_name(&self.dir, &raw) {
                    Some(name) => {
                        let meta = std::fs::metadata(self.dir.join(&name));
                        (name, meta)
                    }
                    None => continue,
                },
            };
            if name.starts_with('.') {
                continue;
            }
            if let Ok(meta) = meta {
                if meta.is_file() {
                    let key = item_key(&name, &meta);
                    files.push((troubled.contains(&key), name, key));
                }
            }
        }
        files.sort();
        // Forget the trouble of files that are gone.
        troubled.retain(|key| files.iter().any(|f| &f.2 == key));
        for (known_trouble, name, key) in files {
            if !ctx.still_owner() {
                return Ok(false);
            }
            match self.one_file(ctx, progress, &name, &key).await {
                Ok(true) => {
                    troubled.remove(&key);
                }
                Ok(false) => return Ok(false),
                // Known already: go on with the others; it is tried again at the next poll.
                Err(e) if known_trouble => debug!(file = %name, error = %e, "still failing"),
                // New trouble (perhaps the store is down): end the sweep, try again later,
                // this file last.
                Err(e) => {
                    troubled.insert(key);
                    return Err(format!("{name}: {e}"));
                }
            }
        }
        Ok(true)
    }

    /// Claims one file and handles it, or finishes what a previous owner left of it.
    /// `Ok(false)`: ownership was lost.
    async fn one_file(
        &self,
        ctx: &ServiceContext,
        progress: &mut Progress,
        name: &str,
        key: &str,
    ) -> Result<bool, String> {
        let path = self.dir.join(name);
        match ctx.begin_item(key).await.map_err(|e| e.to_string())? {
            ItemStart::Handle { attempt } => {
                let result = self.hand_over(ctx, &path, name, attempt).await;
                if result.is_err() && ctx.cancel.is_cancelled() {
                    // Interrupted: not the file's failure. It is given back, neither
                    // recorded as failed nor moved.
                    self.give_back(ctx, key, name, attempt).await;
                    return Ok(false);
                }
                if let Err(e) = &result {
                    warn!(file = %name, attempt, error = %e, "file failed");
                } else {
                    debug!(file = %name, attempt, "file handled");
                }
                // Recorded first: if this node dies before the move, the next owner
                // moves the file without handing it over again.
                self.record(ctx, key, attempt, &result).await?;
                let target = if result.is_ok() {
                    &self.done
                } else {
                    &self.failed
                };
                move_into(&path, target)?;
                if result.is_ok() {
                    progress.handled += 1;
                } else {
                    progress.failed += 1;
                }
                progress.last_file = Some(name.to_string());
                progress.last_at_ms = Some(chrono::Utc::now().timestamp_millis());
                match ctx.state().save_json(progress).await {
                    Ok(()) => {}
                    Err(crate::error::Error::Fenced { .. }) => return Ok(false),
                    Err(e) => warn!(error = %e, "could not save the progress"),
                }
            }
            ItemStart::Done(outcome) => {
                // Handled before; its node stopped before moving it.
                let target = if outcome == Outcome::Ok {
                    &self.done
                } else {
                    &self.failed
                };
                move_into(&path, target)?;
            }
            ItemStart::Abandoned => {
                warn!(file = %name, "its node died while handling it; recovery is `abandon`: moved to the failed directory");
                move_into(&path, &self.failed)?;
            }
            ItemStart::Busy => debug!(file = %name, "another node is handling it"),
            ItemStart::NotOwner => return Ok(false),
        }
        Ok(true)
    }

    async fn hand_over(
        &self,
        ctx: &ServiceContext,
        path: &Path,
        name: &str,
        attempt: i64,
    ) -> Result<(), TaskError> {
        let vars = vec![
            ("CLUSTER", ctx.cluster.clone()),
            ("NODE", ctx.node.clone()),
            ("SERVICE", ctx.service.clone()),
            ("FENCING_TOKEN", ctx.token.to_string()),
            ("ATTEMPT", attempt.to_string()),
            ("FILE", path.display().to_string()),
            ("FILE_NAME", name.to_string()),
        ];
        let call = |body| Invocation {
            label: ctx.service.clone(),
            vars: vars.clone(),
            env: Vec::new(),
            body,
            cancel: ctx.cancel.clone(),
            // A handover gives the handler the service's grace to finish the file (a lost
            // lease bounds it: the node then drops the service within its margin).
            term_grace: Some(ctx.grace),
            output: None,
        };
        match &self.handler {
            FileHandler::Command(c) => c.invoke(call(None)).await,
            FileHandler::Http(h) => {
                let body = tokio::fs::read(path)
                    .await
                    .map_err(|e| TaskError::new(format!("cannot read {}: {e}", path.display())))?;
                h.invoke(call(Some(body))).await
            }
        }
    }

    /// Gives back a file whose handling was interrupted: after a graceful handover the next
    /// owner hands it over again (as the next attempt); after a lost lease the recovery
    /// policy settles it (see [`ServiceContext::release_item`]). Retried briefly while the
    /// store is unreachable; without a record the next owner's recovery policy settles it.
    async fn give_back(&self, ctx: &ServiceContext, key: &str, name: &str, attempt: i64) {
        let mut delay = Duration::from_millis(50);
        for _ in 0..6 {
            match ctx.release_item(key, attempt).await {
                Ok(true) => {
                    info!(file = %name, attempt, "interrupted: given back to the next owner");
                    return;
                }
                Ok(false) => {
                    warn!(file = %name, attempt, "interrupted when this node lost its lease: recorded abandoned (recovery `abandon`); the next owner moves it to the failed directory");
                    return;
                }
                Err(e) => {
                    debug!(file = %name, error = %e, "could not give the file back yet");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        warn!(file = %name, attempt, "interrupted, and not given back: the next owner's recovery policy settles it");
    }

    /// Records an outcome, retrying while the store is unreachable and the node owns the
    /// service. Without a record the file stays where it is (and `running` in the store).
    async fn record(
        &self,
        ctx: &ServiceContext,
        key: &str,
        attempt: i64,
        result: &Result<(), TaskError>,
    ) -> Result<(), String> {
        let mut delay = Duration::from_millis(50);
        loop {
            match ctx.end_item(key, attempt, result).await {
                Ok(()) => return Ok(()),
                Err(e) if !ctx.still_owner() => {
                    return Err(format!("could not record the outcome: {e}"));
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// The file's item key: its name, modification time, size and inode, so that a new file
/// arriving later under a handled file's name is a new item.
fn item_key(name: &str, meta: &std::fs::Metadata) -> String {
    let suffix = format!(
        "|{}.{:09}|{}|{}",
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size(),
        meta.ino()
    );
    let mut key = name.to_string();
    if key.len() + suffix.len() > MAX_ITEM_KEY {
        // Long names: keep a prefix and a digest of the whole name.
        let digest = crate::task::definition_digest(name);
        let mut cut = MAX_ITEM_KEY - suffix.len() - digest.len() - 1;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
        key.push('~');
        key.push_str(&digest);
    }
    key + &suffix
}

/// Renames a file whose name is not UTF-8 (which `ROTA_FILE` and the store's item key
/// cannot carry) to the same name with each byte that is not UTF-8 written `%XX`; the new
/// name, or `None` when the rename failed (it is tried again at the next poll).
fn give_utf8_name(dir: &Path, raw: &std::ffi::OsStr) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut name = String::new();
    for chunk in raw.as_bytes().utf8_chunks() {
        name.push_str(chunk.valid());
        for byte in chunk.invalid() {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    let target = dir.join(&name);
    if target.exists() {
        warn!(file = %name, "a file's name is not UTF-8 and its escaped name is taken: left where it is");
        return None;
    }
    match std::fs::rename(dir.join(raw), &target) {
        Ok(()) => {
            warn!(file = %name, "a file's name was not UTF-8: renamed with its other bytes escaped as %XX");
            Some(name)
        }
        Err(e) => {
            warn!(file = %name, error = %e, "a file's name is not UTF-8 and it cannot be renamed");
            None
        }
    }
}

/// Moves `path` into `dir`, keeping its name unless a file there has it already.
fn move_into(path: &Path, dir: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap_or_default();
    let mut target = dir.join(name);
    if target.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        target = dir.join(format!("{}.{stamp}", name.to_string_lossy()));
    }
    match std::fs::rename(path, &target) {
        Ok(()) => Ok(()),
        // Moved already (by a previous owner finishing its move).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "cannot move {} to {}: {e} (the directories must be on one file system)",
            path.display(),
            target.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_fit_the_store_and_tell_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        std::fs::write(&a, "1").unwrap();
        let meta = std::fs::metadata(&a).unwrap();
        let key = item_key("a.csv", &meta);
        assert!(key.starts_with("a.csv|"), "{key}");
        let long = "x".repeat(400);
        let long_key = item_key(&long, &meta);
        assert!(long_key.len() <= MAX_ITEM_KEY, "{}", long_key.len());
        let other = item_key(&format!("{long}y"), &meta);
        assert_ne!(
            long_key, other,
            "names differing past the cut differ by digest"
        );
        // A new file under the same name is a new item.
        std::fs::remove_file(&a).unwrap();
        std::fs::write(&a, "22").unwrap();
        let again = item_key("a.csv", &std::fs::metadata(&a).unwrap());
        assert_ne!(key, again);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_escaped_so_the_file_can_be_handed_over() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let raw = std::ffi::OsStr::from_bytes(b"r\xffport-\xc3.csv");
        std::fs::write(dir.path().join(raw), "1").unwrap();
        let name = give_utf8_name(dir.path(), raw).expect("renamed");
        assert_eq!(name, "r%FFport-%C3.csv");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&name)).unwrap(),
            "1"
        );
        assert!(!dir.path().join(raw).exists());
        // Its escaped name taken: left alone, not overwritten.
        std::fs::write(dir.path().join(raw), "2").unwrap();
        assert_eq!(give_utf8_name(dir.path(), raw), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&name)).unwrap(),
            "1"
        );
    }

    #[test]
    fn moves_keep_names_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        std::fs::create_dir(&done).unwrap();
        for content in ["first", "second"] {
            let f = dir.path().join("report.csv");
            std::fs::write(&f, content).unwrap();
            move_into(&f, &done).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&done)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0], "report.csv");
        assert!(names[1].starts_with("report.csv."));
        // A file moved already by someone else is not an error.
        move_into(&dir.path().join("gone.csv"), &done).unwrap();
    }
}
