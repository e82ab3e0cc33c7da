//! `chaos audit verify FILE [--expect-hash H]`: checks an audit log's hash chain, and that
//! it passes through a hash kept elsewhere.

use std::path::Path;

use super::{EXIT_FAILURE, Failure};
use crate::{
    audit::{AuditError, find, verify as check},
    sys::trust::{self, Owners},
};

/// Exit 0 when the chain is intact (and passes through `expect`); 1, naming what breaks
/// it, when not. Unsafe modes are warned about.
pub fn verify(path: &Path, expect: Option<&str>) -> Result<u8, Failure> {
    if let Err(untrusted) = trust::check_file(path, &Owners::of_this_process()) {
        eprintln!(
            "chaos: warning: {untrusted}: whoever else may write the log could have rewritten it whole; only a hash kept elsewhere (--expect-hash) tells"
        );
    }
    let chain = match check(path) {
        Ok(chain) => chain,
        Err(broken @ AuditError::Broken { .. }) => {
            eprintln!("chaos: audit log tampered with: {broken}");
            return Ok(EXIT_FAILURE);
        }
        Err(other) => return Err(other.into()),
    };
    if let Some(hash) = expect {
        match find(path, hash)? {
            None => {
                eprintln!(
                    "chaos: audit log tampered with: {}: no entry has the hash {hash}: the log was rewritten (or the hash is another log's)",
                    path.display()
                );
                return Ok(EXIT_FAILURE);
            }
            Some(seq) if seq == chain.entries => println!(
                "{}: {} entries, chain intact, ending at the expected hash",
                path.display(),
                chain.entries
            ),
            Some(seq) => println!(
                "{}: {} entries, chain intact; the expected hash is entry {seq}, {} entries were appended after it (last hash {})",
                path.display(),
                chain.entries,
                chain.entries - seq,
                chain.last_hash
            ),
        }
        return Ok(0);
    }
    println!(
        "{}: {} entries, chain intact (last hash {})",
        path.display(),
        chain.entries,
        chain.last_hash
    );
    Ok(0)
}
