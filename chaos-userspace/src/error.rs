//! The errors a command can end with, and the exit code each maps to.

use crate::{
    audit::AuditError,
    bpf::BpfError,
    kernel::{btf::BtfError, layout::LayoutError, preflight::PreflightError},
    launch::LaunchError,
    measure::{discover::DiscoverError, record::RecordError},
    source::SourceError,
    target::TargetError,
};

/// Exit code for bad input or an environment that cannot run the command.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("this kernel lacks what the observer needs")]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Experiment(#[from] crate::experiment::FileError),
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::Target(_)
            | Error::Preflight(_)
            | Error::Btf(_)
            | Error::Layout(_)
            | Error::Bpf(_)
            | Error::Launch(_)
            | Error::Discover(_)
            | Error::Record(_)
            | Error::Audit(_)
            | Error::Experiment(_) => EXIT_USAGE,
            Error::Source(_) | Error::Output(_) | Error::Io { .. } => EXIT_FAILURE,
        }
    }

    /// The error and its causes on one line; only the first line of each (a verifier log
    /// is long, and `RUST_LOG=debug` shows it whole).
    pub fn one_line(&self) -> String {
        chain(self)
    }
}

/// An error and its causes on one line, the first line of each, without repeats.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![first_line(&err.to_string())];
    let mut source = err.source();
    while let Some(err) = source {
        let text = first_line(&err.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(['.', ' '])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_causes() {
        let err = Error::Io {
            what: "cannot start the runtime",
            source: std::io::Error::other("too many\nlines"),
        };
        assert_eq!(err.one_line(), "cannot start the runtime: too many");
        assert_eq!(err.exit_code(), EXIT_FAILURE);
        assert_eq!(Error::Target(TargetError::Empty).exit_code(), EXIT_USAGE);
    }
}
