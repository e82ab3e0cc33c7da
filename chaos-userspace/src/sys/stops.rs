//! SIGINT and SIGTERM, caught so that a run ends with its summary, and the single-threaded
//! runtime every long-running command uses.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM, caught.
pub struct Stops {
    interrupt: Signal,
    terminate: Signal,
}

impl Stops {
    /// Installs the handlers; call inside the runtime's context.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
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

/// A tokio runtime on this thread, with SIGINT and SIGTERM already caught: call it before
/// chaos says it is ready, so that a Ctrl-C from then on ends the run cleanly, with a summary.
pub fn runtime_with_stops() -> std::io::Result<(tokio::runtime::Runtime, Stops)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stops = {
        let _context = runtime.enter();
        Stops::install()?
    };
    Ok((runtime, stops))
}
