//! `chaos audit verify FILE`: checks an audit log's hash chain.

use std::path::Path;

use super::{EXIT_FAILURE, Failure};
use crate::audit::{AuditError, verify as check};

/// Exit 0 when the chain is intact; 1, naming the first line that breaks it, when not.
pub fn verify(path: &Path) -> Result<u8, Failure> {
    match check(path) {
        Ok(chain) => {
            println!(
                "{}: {} entries, chain intact (last hash {})",
                path.display(),
                chain.entries,
                chain.last_hash
            );
            Ok(0)
        }
        Err(broken @ AuditError::Broken { .. }) => {
            eprintln!("chaos: audit log tampered with: {broken}");
            Ok(EXIT_FAILURE)
        }
        Err(other) => Err(other.into()),
    }
}
