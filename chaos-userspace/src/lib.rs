//! chaos: safe, measured resilience experiments on Linux, observed with eBPF.
//!
//! Pipeline: kernel programs (`chaos-ebpf`) -> ring buffer -> [`decode`] -> [`event::Event`]
//! -> an [`source::EventSource`] -> sinks in [`output`]. Everything after the ring buffer is
//! plain code, tested without root on replayed streams.

pub mod audit;
pub mod bpf;
pub mod cli;
pub mod commands;
pub mod decode;
pub mod error;
pub mod event;
pub mod experiment;
pub mod export;
pub mod inject;
pub mod kernel;
pub mod launch;
pub mod measure;
pub mod output;
pub mod report;
pub mod source;
pub mod target;

use cli::{Cli, Command};

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> Result<u8, error::Error> {
    match cli.command {
        Command::Observe(args) => commands::observe::run(args).map(|()| 0),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Measure(args) => commands::measure::run(args).map(|()| 0),
        Command::Inject(args) => commands::inject::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Report(args) => report::run(args),
        Command::Schema => {
            println!("{}", experiment::file::schema());
            Ok(0)
        }
        Command::Audit(cli::AuditCommand::Verify { file }) => commands::audit::verify(&file),
    }
}
