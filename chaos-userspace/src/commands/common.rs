//! What the long-running commands share: stopping cleanly on a signal, the clock the kernel
//! stamps events with, and a few argument checks.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::Error;

/// SIGINT and SIGTERM, caught so that a run ends with its summary.
pub struct Stops {
    interrupt: Signal,
    terminate: Signal,
}

impl Stops {
    /// Installs the handlers; call inside the runtime's context.
    pub fn install() -> Result<Self, Error> {
        let catch = |kind, what| signal(kind).map_err(|source| Error::Io { what, source });
        Ok(Self {
            interrupt: catch(SignalKind::interrupt(), "cannot handle SIGINT")?,
            terminate: catch(SignalKind::terminate(), "cannot handle SIGTERM")?,
        })
    }

    /// Resolves when either signal arrives.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Resolves after `duration`, or never when there is none (`--duration`, `--max-duration`).
pub async fn after(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the launched command's tree is gone, or never when nothing was launched.
pub async fn when_gone(tree_gone: Option<tokio::sync::oneshot::Receiver<()>>) {
    match tree_gone {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so comparable with
/// kernel event timestamps.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// `--flag SECS` as a positive duration.
pub fn positive_secs(flag: &str, secs: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::Usage(format!("{flag} {secs}: give a positive number of seconds")))
}

/// `--buffer-pages N` as a ring buffer size in bytes.
pub fn ring_bytes(pages: u32) -> Result<u32, Error> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u32;
    if !pages.is_power_of_two() || pages.checked_mul(page).is_none() {
        return Err(Error::Usage(format!(
            "--buffer-pages {pages}: give a power of two (1, 2, 4, ... 1024)"
        )));
    }
    Ok(pages * page)
}

/// A tokio runtime on this thread, with SIGINT and SIGTERM already caught: call it before
/// chaos says it is ready, so that a Ctrl-C from then on ends the run cleanly, with a summary.
pub fn runtime_with_stops() -> Result<(tokio::runtime::Runtime, Stops), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "cannot start the runtime",
            source,
        })?;
    let stops = {
        let _context = runtime.enter();
        Stops::install()?
    };
    Ok((runtime, stops))
}
