//! Readiness probes from userspace: a TCP connect or a command, retried until it succeeds
//! or the recovery timeout passes.

use std::time::Duration;

use tokio::{sync::mpsc, task::AbortHandle};

use crate::{machine::ReadyMark, measure::service::Ready, sys::clock::monotonic_ns};

/// Pause between two readiness probes.
const PROBE_GAP: Duration = Duration::from_millis(1);
/// Longest wait for one TCP connect of a probe.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// How readiness is probed: the rule, for how long at most, as whom.
#[derive(Debug, Clone)]
pub struct Probe {
    pub ready: Ready,
    pub limit: Duration,
    pub user: Option<super::verify::RunAs>,
}

/// Probes until it succeeds or `limit` passes. The time reported is when the successful
/// attempt began (CLOCK_MONOTONIC), so the resolution is the probe gap plus one attempt.
pub fn spawn(probe: &Probe, episode: u64, tx: mpsc::UnboundedSender<ReadyMark>) -> AbortHandle {
    let ready = probe.ready.clone();
    let limit = probe.limit;
    let user = probe.user.clone();
    let task = tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < give_up {
            let ts_ns = monotonic_ns();
            let ok = match &ready {
                Ready::Tcp { addr } => matches!(
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                        .await,
                    Ok(Ok(_))
                ),
                Ready::Cmd { command } => super::verify::shell(command, user.as_ref())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                Ready::Exec | Ready::Listen => return,
            };
            if ok {
                let _ = tx.send(ReadyMark { episode, ts_ns });
                return;
            }
            tokio::time::sleep(PROBE_GAP).await;
        }
    });
    task.abort_handle()
}
