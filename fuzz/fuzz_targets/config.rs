//! The config loader: any text given as a node's TOML file is either refused with named
//! problems or yields a config whose every derived part (timing, tasks, services, admin)
//! builds without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = rota_cli::config::parse(text) else {
        return;
    };
    let problems = config.validate();
    if !problems.is_empty() {
        return;
    }
    let _ = config.timing();
    let _ = config.admin.resolve();
    let _ = config.task_specs();
    let _ = config.builder();
});
