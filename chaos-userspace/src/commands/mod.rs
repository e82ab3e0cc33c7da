//! One module per subcommand: each checks its arguments into a configuration, brings the
//! kernel up (`crate::session`), builds its engine and hands it to `crate::driver`. No
//! command imports another; what they share is in [`common`].
//!
//! # Exit codes
//!
//! The command picks its exit code by the phase it was in when it ended:
//!
//! - before anything was injected, bad input or an environment that cannot run it: 2, with
//!   nothing half-done;
//! - `chaos run`: 0 the hypothesis held, 1 refuted, 3 aborted (a guard, a signal, or an
//!   error once faults were sent);
//! - `chaos inject`: 0 every fault proven, 1 a fault without proof, 3 stopped by an error
//!   after faults were sent;
//! - `observe`, `measure`: 1 for an error while running;
//! - `audit verify`: 1 when the chain is broken.

pub mod audit;
pub mod common;
pub mod doctor;
pub mod inject;
pub mod measure;
pub mod observe;
pub mod report;
pub mod run;

use crate::cli::{AuditCommand, Cli, Command};

/// Bad input, or an environment that cannot run the command (nothing was done).
pub const EXIT_USAGE: u8 = 2;
/// An error while running, before any fault (observe, measure) or a fault without proof.
pub const EXIT_FAILURE: u8 = 1;
/// Stopped after faults were sent: a guard, a signal, an action that failed.
pub const EXIT_ABORTED: u8 = 3;

/// Why a command ended without its own result, and the exit code for it.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: Box<dyn std::error::Error + 'static>,
}

/// A message of the command's own, naming what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Failure {
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            error: Box::new(Refusal(message.into())),
        }
    }

    /// The error, while running: exit `code`.
    pub fn running(code: u8, error: impl std::error::Error + 'static) -> Self {
        Self {
            code,
            error: Box::new(error),
        }
    }

    /// The error and its causes on one line.
    pub fn one_line(&self) -> String {
        crate::sys::chain(self.error.as_ref())
    }
}

/// Any error before the command started its work: exit 2.
impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            code: EXIT_USAGE,
            error: Box::new(error),
        }
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Observe(args) => observe::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Measure(args) => measure::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::run(args),
        Command::Schema => {
            println!("{}", crate::experiment::file::schema());
            Ok(0)
        }
        Command::Audit(AuditCommand::Verify { file, expect_hash }) => {
            audit::verify(&file, expect_hash.as_deref())
        }
    }
}
