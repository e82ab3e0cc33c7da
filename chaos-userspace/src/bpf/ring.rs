//! The kernel event source: the `EVENTS` ring buffer, polled through tokio.

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use super::Counters;
use crate::{
    decode::decode,
    event::{Event, KernelCounters},
    source::{EventSource, SourceError},
};

pub struct RingSource {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Messages the programs log (aya-log), forwarded to this process's logger.
    logs: Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>,
    counters: Counters,
    /// Records userspace could not decode (a chaos bug, not a kernel limit); reported with the
    /// kernel's read errors.
    undecodable: u64,
    /// Whether a write hook is attached; without one, exits carry no unsynced byte count.
    counts_unsynced: bool,
}

impl RingSource {
    /// Registers the ring buffer with the current tokio runtime (call inside it).
    pub fn new(
        ring: RingBuf<MapData>,
        counters: Counters,
        logs: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
        counts_unsynced: bool,
    ) -> Result<Self, SourceError> {
        // SAFETY: the RingBuf and the logger own their fds and live inside the AsyncFd, which
        // deregisters them on drop before the fds are closed.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let logs = logs
            .map(|l| {
                unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
            })
            .transpose()?;
        Ok(Self {
            ring,
            logs,
            counters,
            undecodable: 0,
            counts_unsynced,
        })
    }

    fn read_ready(&mut self, out: &mut Vec<Event>) {
        let ring = self.ring.get_mut();
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(mut event) => {
                    if let (Event::Exit(exit), false) = (&mut event, self.counts_unsynced) {
                        exit.unsynced_bytes = None;
                    }
                    out.push(event);
                }
                Err(err) => {
                    self.undecodable += 1;
                    log::warn!("dropping a ring buffer record: {err}");
                }
            }
        }
    }
}

impl EventSource for RingSource {
    async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<bool, SourceError> {
        loop {
            let logs = async {
                match self.logs.as_mut() {
                    Some(logs) => logs.readable_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                guard = self.ring.readable() => {
                    // tokio only clears readiness that predates this wake-up (it keeps a tick),
                    // so a record committed after the read below still wakes us.
                    guard?.clear_ready();
                    self.read_ready(out);
                    return Ok(true);
                }
                guard = logs => {
                    let mut guard = guard?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> Result<(), SourceError> {
        self.read_ready(out);
        Ok(())
    }

    fn counters(&self) -> KernelCounters {
        let mut counters = self.counters.read();
        counters.read_errors += self.undecodable;
        counters
    }
}
