//! Readiness probes from userspace: a TCP connect or a command, retried until it succeeds
//! or the recovery timeout passes.

use std::time::Duration;

use tokio::{sync::mpsc, task::AbortHandle};

use std::path::Path;

use crate::{
    episode::Holder,
    machine::ReadyMark,
    measure::service::Ready,
    sys::clock::monotonic_ns,
    target::{proc, sockets},
};

/// Pause between two readiness probes.
const PROBE_GAP: Duration = Duration::from_millis(1);
/// Pause between two probes while the service's ports are held by others only.
const STALE_GAP: Duration = Duration::from_millis(50);
/// Longest wait for one TCP connect of a probe.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// How readiness is probed: the rule, for how long at most, as whom, and the service's
/// ports (whose holders tell the new instance from others).
#[derive(Debug, Clone)]
pub struct Probe {
    pub ready: Ready,
    pub limit: Duration,
    pub user: Option<super::verify::RunAs>,
    pub ports: Vec<u16>,
}

/// Probes until it succeeds or `limit` passes. The time reported is when the successful
/// attempt began (CLOCK_MONOTONIC), so the resolution is the probe gap plus one attempt.
pub fn spawn(
    probe: &Probe,
    episode: u64,
    new_pid: Option<u32>,
    tx: mpsc::UnboundedSender<ReadyMark>,
) -> AbortHandle {
    let probe = probe.clone();
    let task = tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + probe.limit;
        let mut told_stale = false;
        while tokio::time::Instant::now() < give_up {
            let ts_ns = monotonic_ns();
            if !attempt(&probe).await {
                tokio::time::sleep(PROBE_GAP).await;
                continue;
            }
            let stale = stale_holders(&probe.ports, new_pid);
            if stale.is_empty() {
                let _ = tx.send(ReadyMark {
                    episode,
                    ts_ns,
                    stale,
                });
                return;
            }
            // Answered, but not by the new instance: say so once, and keep probing.
            if !told_stale {
                told_stale = true;
                let _ = tx.send(ReadyMark {
                    episode,
                    ts_ns,
                    stale,
                });
            }
            tokio::time::sleep(STALE_GAP).await;
        }
    });
    task.abort_handle()
}

/// One attempt: the TCP connect or the command.
async fn attempt(probe: &Probe) -> bool {
    match &probe.ready {
        Ready::Tcp { addr } => matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        ),
        Ready::Cmd { command } => super::verify::shell(command, probe.user.as_ref())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .is_ok_and(|s| s.success()),
        Ready::Exec | Ready::Listen | Ready::Unit => false,
    }
}

/// Who holds the service's ports when none of them is `new_pid` or its descendant: then the
/// probe was answered by someone else (an orphan of the old instance, the old instance
/// itself). Empty when the new instance holds one, or nobody can be seen holding them.
fn stale_holders(ports: &[u16], new_pid: Option<u32>) -> Vec<Holder> {
    let (Some(new_pid), false) = (new_pid, ports.is_empty()) else {
        return Vec::new();
    };
    let proc = Path::new("/proc");
    let holders = sockets::holders(proc, ports);
    let ours = |pid: u32| {
        let mut pid = pid;
        for _ in 0..32 {
            if pid == new_pid {
                return true;
            }
            match proc::stat(proc, pid) {
                Some(s) if s.ppid > 1 => pid = s.ppid,
                _ => return false,
            }
        }
        false
    };
    if holders.is_empty() || holders.iter().any(|&h| ours(h)) {
        return Vec::new();
    }
    holders
        .into_iter()
        .map(|pid| Holder {
            pid,
            comm: proc::comm_of(pid),
        })
        .collect()
}

/// Pause between two attempts of a readiness watch.
const WATCH_GAP: Duration = Duration::from_millis(5);

/// Watches readiness after a fault until `until_ns` (CLOCK_MONOTONIC): reports the first
/// result, then each change, each with the time its attempt began.
pub fn watch(
    probe: &Probe,
    fault: u64,
    until_ns: u64,
    tx: mpsc::UnboundedSender<crate::machine::Readiness>,
) -> AbortHandle {
    let probe = probe.clone();
    let task = tokio::spawn(async move {
        let mut last = None;
        while monotonic_ns() < until_ns {
            let ts_ns = monotonic_ns();
            let ok = attempt(&probe).await;
            if last != Some(ok) {
                last = Some(ok);
                if tx
                    .send(crate::machine::Readiness { fault, ts_ns, ok })
                    .is_err()
                {
                    return;
                }
            }
            tokio::time::sleep(WATCH_GAP).await;
        }
    });
    task.abort_handle()
}
