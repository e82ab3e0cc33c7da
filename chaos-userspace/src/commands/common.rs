//! What the commands share: argument checks, the exports, and the last steps of a live
//! run (the ring buffer, the runtime, the driver).

use std::time::Duration;

use std::{io::Write, path::Path};

use super::Failure;
use crate::{
    cli::ExportArgs,
    driver,
    export::{ExportConfig, Exporters, otlp::Endpoint, prometheus},
    machine::record::{Header, Recorder},
};

/// `--flag SECS` as a positive duration.
pub fn positive_secs(flag: &str, secs: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::refused(format!("{flag} {secs}: give a positive number of seconds"))
        })
}

/// `--buffer-pages N` as a ring buffer size in bytes.
pub fn ring_bytes(pages: u32) -> Result<u32, Failure> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u32;
    if !pages.is_power_of_two() || pages.checked_mul(page).is_none() {
        return Err(Failure::refused(format!(
            "--buffer-pages {pages}: give a power of two (1, 2, 4, ... 1024)"
        )));
    }
    Ok(pages * page)
}

/// `--otlp`, `--prometheus`, `--textfile`, checked.
pub fn export_config(args: &ExportArgs) -> Result<ExportConfig, Failure> {
    Ok(ExportConfig {
        otlp: Endpoint::from_args(args.otlp.as_deref())?,
        prometheus: args
            .prometheus
            .as_deref()
            .map(prometheus::listen_addr)
            .transpose()?,
        textfile: args.textfile.clone(),
        attributes: Vec::new(),
    })
}

/// The exporters of `config` and the Prometheus server to start inside the runtime.
pub fn exporters(
    config: &ExportConfig,
) -> Result<(Exporters, Option<prometheus::Server>), Failure> {
    Ok(Exporters::new(config)?)
}

/// The `--record FILE` recorder, its header written.
pub fn recorder<H: Header>(
    path: Option<&Path>,
    header: &H,
) -> Result<Option<Recorder<Box<dyn Write>>>, Failure> {
    path.map(|path| {
        driver::recorder(path, header).map_err(|e| {
            Failure::refused(format!(
                "{}: cannot create the --record file: {e}",
                path.display()
            ))
        })
    })
    .transpose()
}

/// The audit chain's last hash, to keep elsewhere: `chaos audit verify --expect-hash` then
/// tells a log rewritten whole.
pub fn say_chain(log: &crate::audit::AuditLog) {
    let chain = log.chain();
    eprintln!(
        "chaos: audit log {}: {} entries, last hash {} (keep it: chaos audit verify {} --expect-hash {})",
        log.path().display(),
        chain.entries,
        chain.last_hash,
        log.path().display(),
        chain.last_hash
    );
}
