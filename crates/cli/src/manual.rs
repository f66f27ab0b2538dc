//! `rota completions SHELL` and `rota man [--out DIR]`: the shell completion scripts and the
//! man pages, generated from the command line's own definition, so they cannot drift from it.
//!
//! Man pages: `rota man` prints rota(1), the overview: every option and command, then the
//! exit status, environment and files. `rota man --out DIR` writes rota.1 and one page per
//! command, named by its path (rota-node.1, rota-config-check.1, rota-ctl-drain.1, ...),
//! as `man rota-node` finds them.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context};
use clap::Command;
use clap_complete::Shell;
use clap_mangen::{
    roff::{bold, roman, Roff},
    Man,
};

use crate::node::{EXIT_CONFIG, EXIT_DUPLICATE, EXIT_RESTART};

/// Prints the completion script of `shell` for `cmd`.
pub fn completions(shell: Shell, mut cmd: Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rota", &mut script);
    print(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints rota(1), or writes every page into `out`.
pub fn man(cmd: Command, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let pages = pages(cmd)?;
    let Some(dir) = out else {
        print(&pages[0].1)?;
        return Ok(ExitCode::SUCCESS);
    };
    if dir.exists() && !dir.is_dir() {
        bail!(
            "--out {}: is not a directory; give the directory to write the pages into",
            dir.display()
        );
    }
    if !dir.exists() {
        bail!(
            "--out {}: does not exist; create it first (mkdir -p {})",
            dir.display(),
            dir.display()
        );
    }
    let mut stdout = std::io::stdout().lock();
    for (name, page) in &pages {
        let path: PathBuf = dir.join(name);
        std::fs::write(&path, page)
            .with_context(|| format!("--out {}: cannot write {name}", dir.display()))?;
        writeln!(stdout, "{}", path.display()).ok();
    }
    Ok(ExitCode::SUCCESS)
}

/// Every page, rota.1 first, each with its file name.
fn pages(cmd: Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives each command its display name (`rota-config-check`), which names its page.
    cmd.build();
    let date = page_date();
    let mut pages = Vec::new();
    let mut top = Vec::new();
    page(&cmd, &date)
        .render(&mut top)
        .context("rendering rota(1)")?;
    top.extend_from_slice(overview_sections().to_roff().as_bytes());
    pages.push(("rota.1".to_string(), top));
    add_subcommand_pages(&cmd, &date, &mut pages)?;
    Ok(pages)
}

/// A page's header: ROTA-NODE(1), the version, the date, "rota manual".
fn page(cmd: &Command, date: &str) -> Man {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    Man::new(cmd.clone())
        .title(name.to_uppercase())
        .date(date)
        .source(format!("rota {}", env!("CARGO_PKG_VERSION")))
        .manual("rota manual")
}

/// The date in the pages' header: `SOURCE_DATE_EPOCH`'s (reproducible builds set it, as
/// scripts/package-deb does), else today's.
fn page_date() -> String {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    epoch
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now)
        .format("%Y-%m-%d")
        .to_string()
}

fn add_subcommand_pages(
    cmd: &Command,
    date: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = page(sub, date);
        let mut page = Vec::new();
        man.render(&mut page)
            .with_context(|| format!("rendering {}", man.get_filename()))?;
        let mut see_also = Roff::new();
        see_also.control("SH", ["SEE ALSO"]);
        see_also.text([bold("rota"), roman("(1)")]);
        page.extend_from_slice(see_also.to_roff().as_bytes());
        pages.push((man.get_filename(), page));
        add_subcommand_pages(sub, date, pages)?;
    }
    Ok(())
}

/// What rota(1) says beyond the options: exit status, environment, files, see also.
/// Written without apostrophes: these lines are added as plain roff, after the preamble
/// that clap_mangen writes for them.
fn overview_sections() -> Roff {
    let mut r = Roff::new();
    let item = |r: &mut Roff, term: &str, text: &str| {
        r.control("TP", []);
        r.text([bold(term)]);
        r.text([roman(text)]);
    };
    r.control("SH", ["EXIT STATUS"]);
    r.text([
        roman("Of rota node and the other commands; rota ctl has its own, listed in "),
        bold("rota-ctl"),
        roman("(1)."),
    ]);
    item(
        &mut r,
        "0",
        "Success; for rota node: the node stopped (a signal, or a shutdown command).",
    );
    item(&mut r, "1", "An error, described on standard error.");
    item(
        &mut r,
        &EXIT_CONFIG.to_string(),
        "Invalid configuration or arguments: every problem is named with its field, value and fix. rota node started nothing.",
    );
    item(
        &mut r,
        &EXIT_DUPLICATE.to_string(),
        "rota node: another live node already uses this node id in the cluster. Nothing was started.",
    );
    item(
        &mut r,
        &EXIT_RESTART.to_string(),
        "rota node, with [node] restart = \"exit\": a restart command ended the node, for its supervisor to start it again (EX_TEMPFAIL).",
    );
    r.control("SH", ["ENVIRONMENT"]);
    for (name, text) in [
        ("ROTA_STORE_URL", "The store URL; wins over [store] url. Keeps a password out of files and command lines."),
        ("ROTA_ADMIN_TOKEN", "The admin API token of rota node; wins over [admin] token."),
        ("ROTA_READ_TOKEN", "The read-only API token of rota node; wins over [admin] read_token."),
        ("ROTA_URL, ROTA_TOKEN", "The admin API address and token of rota ctl."),
        ("ROTA_LOG", "The log filter of rota node, e.g. rota=debug; wins over [log] level."),
    ] {
        item(&mut r, name, text);
    }
    r.control("SH", ["FILES"]);
    for (name, text) in [
        ("/etc/rota/rota.toml", "The node configuration of the Debian package (rota init writes one; rota config check checks it)."),
        ("/etc/default/rota", "Environment of the packaged service: tokens and the store URL."),
        ("/var/lib/rota", "State directory of the packaged service, home of the rota user."),
        ("/lib/systemd/system/rota.service", "The systemd unit of the Debian package."),
    ] {
        item(&mut r, name, text);
    }
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("rota-node"),
        roman("(1), "),
        bold("rota-init"),
        roman("(1), "),
        bold("rota-config-check"),
        roman("(1), "),
        bold("rota-ctl"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1)"),
    ]);
    r
}

/// Writes to standard output; a reader that went away (`| head`) is no error.
fn print(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn overview_has_no_apostrophe() {
        // Plain roff would set one as a closing quote (the preamble's \*(Aq is not used here).
        assert!(!super::overview_sections().to_roff().contains('\''));
    }
}
