//! The audit log: who did what to which process, when; append-only, hash-chained, and written
//! to disk before the fault it records fires.
//!
//! # Wire format
//!
//! JSON Lines, one entry per line: `seq` (1, 2, ...), `prev` (the previous entry's `hash`, or
//! 64 zeros for the first), `time` (RFC 3339, UTC), `uid`, `user`, `host`, `event` (what
//! happened: `start`, `armed`, `fault`, `guard`, `end`, with its details) and `hash`: the
//! SHA-256, in hex, of `prev` followed by the entry's JSON without `hash` (fields in the order
//! above). An edit changes a hash; a deletion or a reordering breaks `seq` or `prev`.
//! `chaos audit verify FILE` checks the whole chain and names the first line that breaks it.
//!
//! The `event` of each entry is one of the typed [`Entry`] kinds, documented in [`entry`].

pub mod entry;

pub use entry::Entry;

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Broken {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// An entry without its hash: what the hash covers, in this field order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    seq: u64,
    prev: String,
    time: String,
    uid: u32,
    user: String,
    host: String,
    event: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    body: Body,
    hash: String,
}

fn hash(body: &Body) -> String {
    let mut digest = Sha256::new();
    digest.update(body.prev.as_bytes());
    digest.update(serde_json::to_vec(body).expect("an audit body serializes"));
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub entries: u64,
    pub last_hash: String,
}

/// Checks every entry of the log at `path`.
pub fn verify(path: &Path) -> Result<Chain, AuditError> {
    let io = |source| AuditError::Io {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut prev = GENESIS.to_string();
    let mut seq = 0;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let broken = |reason: String| AuditError::Broken {
            path: path.into(),
            line: index + 1,
            reason,
        };
        let entry: Line =
            serde_json::from_str(&line).map_err(|e| broken(format!("not an audit entry ({e})")))?;
        if entry.body.seq != seq + 1 {
            return Err(broken(format!(
                "entry {} where {} was expected: an entry was deleted or the entries reordered",
                entry.body.seq,
                seq + 1
            )));
        }
        if entry.body.prev != prev {
            return Err(broken(
                "does not follow the entry before it (prev hash differs): deleted or reordered"
                    .into(),
            ));
        }
        if hash(&entry.body) != entry.hash {
            return Err(broken("its content does not match its hash: edited".into()));
        }
        seq = entry.body.seq;
        prev = entry.hash;
    }
    Ok(Chain {
        entries: seq,
        last_hash: prev,
    })
}

/// An open audit log, continuing the chain already in the file.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    uid: u32,
    user: String,
    host: String,
}

impl AuditLog {
    /// Opens (or creates) the log; an existing log is verified first, and chaos refuses to
    /// add to a broken chain.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let chain = if path.exists() {
            verify(path)?
        } else {
            Chain {
                entries: 0,
                last_hash: GENESIS.into(),
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.into(),
                source,
            })?;
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(Self {
            path: path.into(),
            file,
            seq: chain.entries,
            prev: chain.last_hash,
            uid: uid.as_raw(),
            user,
            host,
        })
    }

    /// Appends an entry and syncs it to disk before returning.
    pub fn append(&mut self, entry: &Entry) -> Result<(), AuditError> {
        let event = serde_json::to_value(entry).expect("an audit entry serializes");
        let body = Body {
            seq: self.seq + 1,
            prev: self.prev.clone(),
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            uid: self.uid,
            user: self.user.clone(),
            host: self.host.clone(),
            event,
        };
        let entry = Line {
            hash: hash(&body),
            body,
        };
        let mut line = serde_json::to_vec(&entry).expect("an audit entry serializes");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.seq = entry.body.seq;
        self.prev = entry.hash;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        for i in 1..=n {
            log.append(&Entry::Abort(entry::Abort {
                reason: format!("n{i}"),
            }))
            .unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn a_chain_verifies_and_continues_across_opens() {
        let (_dir, path) = log_of(3);
        assert_eq!(verify(&path).unwrap().entries, 3);
        AuditLog::open(&path)
            .unwrap()
            .append(&Entry::Abort(entry::Abort {
                reason: "end".into(),
            }))
            .unwrap();
        assert_eq!(verify(&path).unwrap().entries, 4);
    }

    #[test]
    fn edits_deletions_and_reorderings_are_found_and_placed() {
        let (_dir, path) = log_of(4);
        let good = lines(&path);

        let mut edited = good.clone();
        edited[2] = edited[2].replace("\"n3\"", "\"n30\"");
        write(&path, &edited);
        let err = verify(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(":3: its content does not match its hash: edited"),
            "{err}"
        );

        let mut deleted = good.clone();
        deleted.remove(1);
        write(&path, &deleted);
        let err = verify(&path).unwrap_err().to_string();
        assert!(err.contains(":2: entry 3 where 2 was expected"), "{err}");

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        write(&path, &reordered);
        assert!(
            verify(&path)
                .unwrap_err()
                .to_string()
                .contains(":2: entry 3 where 2")
        );

        // Renumbering by hand does not help: the chain of hashes still breaks.
        let mut renumbered = deleted.clone();
        renumbered[1] = renumbered[1].replace("\"seq\":3", "\"seq\":2");
        write(&path, &renumbered);
        let err = verify(&path).unwrap_err().to_string();
        assert!(
            err.contains(":2: does not follow the entry before it"),
            "{err}"
        );

        write(&path, &edited);
        assert!(
            AuditLog::open(&path).is_err(),
            "no appending to a broken chain"
        );
        write(&path, &good);
        assert!(verify(&path).is_ok());
    }
}
