//! Installable as a service: shell completions, man pages and `rota init`, run through the
//! real binary, and the Debian package built by `scripts/package-deb` from this test's
//! binary, installed with dpkg, its unit verified by systemd, then purged.
//!
//! The package test installs into this machine's root file system: it needs root, as the
//! suite has on CI, and fails (never skips) without it.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

const ROTA: &str = env!("CARGO_BIN_EXE_rota");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Commands that every completion script and the man page must know.
const COMMANDS: [&str; 7] = [
    "node",
    "status",
    "config",
    "init",
    "ctl",
    "completions",
    "man",
];

fn rota(args: &[&str]) -> Output {
    run(Command::new(ROTA).args(args))
}

/// Runs with no standard input (so never on a terminal) and collects the output.
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn completions_for_every_shell_know_every_command() {
    for (shell, marker) in [
        ("bash", "complete -F _rota"),
        ("zsh", "#compdef rota"),
        ("fish", "complete -c rota"),
        ("elvish", "edit:completion:arg-completer[rota]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = ok(rota(&["completions", shell]), shell);
        assert!(script.contains(marker), "{shell}: no `{marker}`:\n{script}");
        for command in COMMANDS {
            assert!(
                script.contains(command),
                "{shell}: `{command}` is not completed"
            );
        }
        // Nested commands too: `rota config check`, `rota ctl drain`.
        assert!(
            script.contains("check") && script.contains("drain"),
            "{shell}"
        );
    }
    // The bash script is valid bash (the other shells may not be installed).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.bash");
    std::fs::write(&file, ok(rota(&["completions", "bash"]), "bash")).unwrap();
    ok(run(Command::new("bash").arg("-n").arg(&file)), "bash -n");

    let bad = rota(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(
        err.contains("tcsh") && err.contains("bash") && err.contains("powershell"),
        "the error names the value and the choices: {err}"
    );
}

/// The roff control lines of a page (macros), e.g. `.TH`, `.SH`.
fn macros(page: &str) -> Vec<&str> {
    page.lines().filter(|l| l.starts_with('.')).collect()
}

#[test]
fn man_page_is_roff_and_documents_commands_and_exit_codes() {
    let page = ok(rota(&["man"]), "rota man");
    let lines = macros(&page);
    let title = lines
        .iter()
        .find(|l| l.starts_with(".TH "))
        .unwrap_or_else(|| panic!("no .TH title:\n{page}"));
    assert!(title.starts_with(".TH ROTA 1 "), "{title}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(".TH ") && !std::ptr::eq(l, title)),
        "one title"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(lines.contains(&section), "no `{section}` in:\n{page}");
    }
    for command in COMMANDS {
        assert!(
            page.contains(&format!("rota\\-{command}(1)")),
            "`{command}` is not listed"
        );
    }
    for code in ["75", "ROTA_ADMIN_TOKEN", "/etc/rota/rota.toml"] {
        assert!(page.contains(code), "`{code}` is not documented");
    }
    // Every text line is ordinary text (roff's escape of a leading `.` or `'` is the
    // writer's job): no line begins with a quote that roff would read as a control line.
    assert!(!page.lines().any(|l| l.starts_with('\'')), "{page}");
    // Rendered, when groff is here: no warning at all.
    if has_tool("groff") {
        let mut groff = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn man_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    // One date for both runs below (else today's, which may change between them).
    let man = |args: &[&str]| {
        run(Command::new(ROTA)
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000"))
    };
    let listed = ok(
        man(&["man", "--out", dir.path().to_str().unwrap()]),
        "rota man --out",
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(listed.lines().count(), names.len(), "{listed}");
    for expected in [
        "rota.1",
        "rota-node.1",
        "rota-init.1",
        "rota-config.1",
        "rota-config-check.1",
        "rota-ctl-drain.1",
        "rota-completions.1",
        "rota-man.1",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("help")),
        "no page for `help`: {names:?}"
    );
    for name in &names {
        let page = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let stem = name.strip_suffix(".1").unwrap();
        assert!(
            macros(&page)
                .iter()
                .any(|l| l.starts_with(&format!(".TH {} 1 ", stem.to_uppercase()))),
            "{name} has no title of its own"
        );
    }
    // rota.1 is the page `rota man` prints.
    let printed = ok(man(&["man"]), "rota man");
    assert!(
        printed.contains(".TH ROTA 1 2023-11-14 \"rota "),
        "the date: {printed}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rota.1")).unwrap(),
        printed
    );

    let missing = dir.path().join("missing");
    let bad = rota(&["man", "--out", missing.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("mkdir -p"),
        "{err}"
    );
}

/// `rota config check FILE`: its exit code and output.
fn check(file: &Path) -> (Option<i32>, String) {
    let out = rota(&["config", "check", file.to_str().unwrap()]);
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn init_writes_a_commented_config_that_passes_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    let out = rota(&[
        "init",
        "--id",
        "node-7",
        "--cluster",
        "orders",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(ok(out, "rota init --out"), "", "the file, not stdout");
    let (code, said) = check(&file);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok (node `node-7` in cluster `orders`, 0 task(s))"),
        "{said}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("url = \"sqlite:///var/lib/rota/rota.db\""));
    assert!(written.contains("listen = \"127.0.0.1:7070\""));
    assert!(
        written.contains("ROTA_ADMIN_TOKEN"),
        "tokens are referenced"
    );
    assert!(
        !written.lines().any(|l| l.starts_with("token")),
        "no token unless asked:\n{written}"
    );
    // Every key that is set has a comment just before it (or a section header).
    let lines: Vec<&str> = written.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(lines[i - 1].starts_with('#'), "`{line}` is not explained");
        }
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644,
        "no secret in it"
    );

    // The example task, uncommented, is a valid task.
    let start = lines.iter().position(|l| *l == "# [[task]]").unwrap();
    let mut with_task: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    for line in &lines[start..] {
        with_task.push(line.strip_prefix("# ").unwrap_or(line).to_string());
    }
    let task_file = dir.path().join("with-task.toml");
    std::fs::write(&task_file, with_task.join("\n")).unwrap();
    let (code, said) = check(&task_file);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("1 task(s)"), "{said}");

    // No flag, not a terminal: the defaults, on stdout; the id is this host's name.
    let printed = ok(rota(&["init"]), "rota init");
    let stdout_file = dir.path().join("printed.toml");
    std::fs::write(&stdout_file, &printed).unwrap();
    let (code, said) = check(&stdout_file);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("in cluster `default`"), "{said}");
    // Off: no admin API.
    let no_api = ok(
        rota(&["init", "--admin-listen", "off"]),
        "--admin-listen off",
    );
    assert!(
        no_api.contains("# listen = ") && !no_api.contains("\nlisten = "),
        "{no_api}"
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    std::fs::write(&file, "kept\n").unwrap();
    let path = file.to_str().unwrap();
    let refused = rota(&["init", "--out", path]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains(path) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept\n");

    ok(rota(&["init", "--out", path, "--force"]), "--force");
    assert_eq!(check(&file).0, Some(0));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");

    // --force without --out, --out a directory or in a missing one: refused, named.
    assert_eq!(rota(&["init", "--force"]).status.code(), Some(2));
    let into_dir = rota(&["init", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(into_dir.status.code(), Some(1));
    assert!(text(&into_dir.stderr).contains("is a directory"));
    let nowhere = dir.path().join("no/such/dir/rota.toml");
    let missing = rota(&["init", "--out", nowhere.to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("mkdir -p"));
}

#[test]
fn init_names_each_bad_flag_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    let out = rota(&[
        "init",
        "--id",
        "node 1",
        "--store",
        "redis://cache/0",
        "--admin-listen",
        "localhost",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for named in [
        "--id (from node.id)",
        "\"node 1\"",
        "--store (from store.url)",
        "unknown scheme `redis`",
        "--admin-listen (from admin.listen)",
        "\"localhost\"",
        "nothing was written",
    ] {
        assert!(err.contains(named), "`{named}` not in: {err}");
    }
    assert!(!file.exists());
    let bad_restart = rota(&["init", "--restart", "reboot"]);
    assert_eq!(bad_restart.status.code(), Some(2));
    assert!(text(&bad_restart.stderr).contains("exec"));
}

#[test]
fn init_generates_a_token_only_when_asked_and_never_prints_it() {
    // Into a file only: a token on a terminal or in a pipe's log would leak.
    let refused = rota(&["init", "--generate-token"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("--out"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    let out = rota(&["init", "--generate-token", "--out", file.to_str().unwrap()]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{said}");
    let written = std::fs::read_to_string(&file).unwrap();
    let token = written
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no token:\n{written}"));
    assert_eq!(token.len(), 48);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!said.contains(token), "printed: {said}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(check(&file).0, Some(0));
    // Another run, another token.
    let again = dir.path().join("again.toml");
    ok(
        rota(&["init", "--generate-token", "--out", again.to_str().unwrap()]),
        "again",
    );
    assert!(!std::fs::read_to_string(&again).unwrap().contains(token));
}

#[test]
fn init_asks_on_a_terminal_for_the_flags_not_given() {
    assert!(
        has_tool("script"),
        "`script` (util-linux, Debian's bsdutils) gives the test a terminal: apt-get install bsdutils"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rota.toml");
    // Under `script`, rota's stdin is a terminal. Answers: a bad id (asked again), a good
    // one, the default cluster, a store URL; then the end of input (^D) takes the default
    // of the last question.
    let command = format!("'{ROTA}' init --restart exit --out '{}'", file.display());
    // `timeout`: a `script` that kept waiting for input would otherwise hang the suite.
    let mut child = Command::new("timeout")
        .args(["60", "script", "-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            // ^D: the end of input on the terminal, whatever `script` does at its own.
            .write_all(b"bad id\nasked-node\n\nsqlite:///tmp/asked.db\n\x04")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let screen = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("node id, unique in the cluster ["),
        "{screen}"
    );
    assert!(
        screen.contains("node.id = \"bad id\""),
        "the bad answer is named: {screen}"
    );
    let (code, said) = check(&file);
    assert_eq!(code, Some(0), "{said}\n{screen}");
    assert!(
        said.contains("node `asked-node` in cluster `default`"),
        "{said}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("url = \"sqlite:///tmp/asked.db\""),
        "{written}"
    );
    assert!(written.contains("listen = \"127.0.0.1:7070\""), "{written}");
    assert!(written.contains("restart = \"exit\""), "{written}");
}

// ---------------------------------------------------------------------------------------
// The Debian package.

/// What the package installs, with the mode each file must have.
const PACKAGE_FILES: [(&str, &str); 11] = [
    ("/usr/bin/rota", "-rwxr-xr-x"),
    ("/lib/systemd/system/rota.service", "-rw-r--r--"),
    ("/etc/rota/rota.toml", "-rw-r--r--"),
    ("/etc/default/rota", "-rw-------"),
    ("/usr/share/bash-completion/completions/rota", "-rw-r--r--"),
    ("/usr/share/zsh/vendor-completions/_rota", "-rw-r--r--"),
    (
        "/usr/share/fish/vendor_completions.d/rota.fish",
        "-rw-r--r--",
    ),
    ("/usr/share/man/man1/rota.1.gz", "-rw-r--r--"),
    ("/usr/share/man/man1/rota-node.1.gz", "-rw-r--r--"),
    ("/usr/share/doc/rota/copyright", "-rw-r--r--"),
    ("/usr/share/doc/rota/examples/rota.toml", "-rw-r--r--"),
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// dpkg's state of the `rota` package: `install ok installed`, or empty when unknown.
fn package_status() -> String {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "rota"]));
    text(&out.stdout).trim().to_string()
}

/// Whether dpkg holds anything of the package (installed, half-installed, config files).
fn package_present() -> bool {
    let status = package_status();
    !status.is_empty() && !status.ends_with(" not-installed")
}

fn purge() {
    ok(
        run(Command::new("dpkg").args(["--purge", "rota"])),
        "dpkg --purge rota",
    );
}

#[test]
fn debian_package_installs_a_verified_unit_and_purges_cleanly() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the package test installs a .deb into this machine (dpkg -i, a system user): it \
         needs root, as on CI; run the suite as root (it is meant for a disposable machine)"
    );
    for tool in [
        "dpkg-deb",
        "dpkg",
        "objdump",
        "strip",
        "systemd-analyze",
        "adduser",
    ] {
        assert!(
            has_tool(tool),
            "`{tool}` is missing: apt-get install dpkg binutils systemd adduser (./scripts/test installs them)"
        );
    }
    // A run that failed half-way may have left it installed.
    if package_present() {
        purge();
    }

    let out_dir = tempfile::tempdir().unwrap();
    let built = ok(
        run(Command::new(repository().join("scripts/package-deb"))
            .args(["--fast", "--binary", ROTA, "--out"])
            .arg(out_dir.path())),
        "scripts/package-deb",
    );
    let arch = ok(
        run(Command::new("dpkg").arg("--print-architecture")),
        "dpkg --print-architecture",
    );
    let deb = PathBuf::from(built.lines().last().unwrap_or_default());
    assert_eq!(
        deb,
        out_dir
            .path()
            .join(format!("rota_{VERSION}_{}.deb", arch.trim())),
        "{built}"
    );

    let info = ok(
        run(Command::new("dpkg-deb").arg("--info").arg(&deb)),
        "dpkg-deb --info",
    );
    for field in [
        "Package: rota".to_string(),
        format!("Version: {VERSION}"),
        format!("Architecture: {}", arch.trim()),
        "Depends: libc6 (>= 2.".to_string(),
        "Maintainer: ".to_string(),
        "Description: ".to_string(),
    ] {
        assert!(info.contains(&field), "no `{field}` in:\n{info}");
    }
    for member in ["conffiles", "postinst", "prerm", "postrm", "control"] {
        assert!(info.contains(&format!(" {member}")), "no {member}:\n{info}");
    }
    let contents = ok(
        run(Command::new("dpkg-deb").arg("--contents").arg(&deb)),
        "dpkg-deb --contents",
    );
    for (path, mode) in PACKAGE_FILES {
        let line = contents
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{contents}"));
        assert!(
            line.starts_with(&format!("{mode} root/root ")),
            "{path}: {line}"
        );
    }
    let conffiles = ok(
        run(Command::new("dpkg-deb")
            .args(["--info"])
            .arg(&deb)
            .arg("conffiles")),
        "conffiles",
    );
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/rota/rota.toml", "/etc/default/rota"]
    );

    // Installed twice: the second is the reinstall over a package a run left behind.
    for round in 0..2 {
        ok(
            run(Command::new("dpkg").arg("-i").arg(&deb)),
            &format!("dpkg -i, round {round}"),
        );
        assert_eq!(package_status(), "install ok installed");
    }
    let version = ok(
        run(Command::new("/usr/bin/rota").arg("--version")),
        "rota --version",
    );
    assert_eq!(version.trim(), format!("rota {VERSION}"));
    for (path, mode) in PACKAGE_FILES {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode_bits(mode), "{path}");
    }

    // The system user, and its state directory.
    let passwd = ok(
        run(Command::new("getent").args(["passwd", "rota"])),
        "getent passwd rota",
    );
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(
        fields[5..],
        ["/var/lib/rota", "/usr/sbin/nologin"],
        "{passwd}"
    );
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {passwd}");
    let state = std::fs::metadata("/var/lib/rota").unwrap();
    assert!(state.is_dir());
    assert_eq!(state.uid(), uid, "/var/lib/rota belongs to rota");

    // The packaged config is valid, and the unit passes systemd's own check.
    let (code, said) = check(Path::new("/etc/rota/rota.toml"));
    assert_eq!(code, Some(0), "{said}");
    let config = std::fs::read_to_string("/etc/rota/rota.toml").unwrap();
    assert!(config.contains("restart = \"exit\""), "{config}");
    let verify =
        run(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/rota.service"]));
    let said = text(&verify.stdout) + &text(&verify.stderr);
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("rota.service"))
        .collect();
    assert!(
        verify.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{said}",
        verify.status
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/rota.service").unwrap();
    for setting in [
        "ExecStart=/usr/bin/rota node --config /etc/rota/rota.toml",
        "User=rota",
        "RestartForceExitStatus=75",
        "RestartPreventExitStatus=2 3",
        "KillMode=mixed",
        "EnvironmentFile=-/etc/default/rota",
    ] {
        assert!(
            unit.lines().any(|l| l == setting),
            "{setting} is not in the unit"
        );
    }
    // The man page, through man itself when it is here.
    if has_tool("man") {
        let page = ok(
            run(Command::new("man")
                .args(["-P", "cat", "rota-node"])
                .env("MANWIDTH", "80")),
            "man rota-node",
        );
        assert!(page.contains("--config"), "{page}");
    }

    // Purged: every file gone, the user kept (see docs/operators.md, "Install").
    purge();
    assert!(!package_present(), "dpkg still holds {}", package_status());
    for (path, _) in PACKAGE_FILES {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    assert!(!Path::new("/etc/rota").exists(), "/etc/rota is left");
    ok(
        run(Command::new("getent").args(["passwd", "rota"])),
        "the rota user stays",
    );
}

/// `-rw-r--r--` as 0o644.
fn mode_bits(mode: &str) -> u32 {
    mode[1..]
        .chars()
        .fold(0, |bits, c| bits << 1 | u32::from(c != '-'))
}
