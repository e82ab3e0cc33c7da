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
}

impl RingSource {
    /// Registers the ring buffer with the current tokio runtime (call inside it).
    pub fn new(
        ring: RingBuf<MapData>,
        counters: Counters,
        logs: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
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
        })
    }

    fn read_ready(ring: &mut RingBuf<MapData>, out: &mut Vec<Event>, undecodable: &mut u64) {
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(event) => out.push(event),
                Err(err) => {
                    *undecodable += 1;
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
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    Self::read_ready(guard.get_inner_mut(), out, &mut self.undecodable);
                    // tokio only clears readiness that predates this wake-up (it keeps a tick),
                    // so a record committed after the loop above still wakes us.
                    guard.clear_ready();
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
        Self::read_ready(self.ring.get_mut(), out, &mut self.undecodable);
        Ok(())
    }

    fn counters(&self) -> KernelCounters {
        let mut counters = self.counters.read();
        counters.read_errors += self.undecodable;
        counters
    }
}
