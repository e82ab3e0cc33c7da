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

use crate::sys::trust::{self, Owners, Untrusted};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log, or a directory it lies in, is not chaos's alone: whoever else may write it
    /// could rewrite the record.
    #[error(
        "audit log {log}: {untrusted}: others could rewrite the record; chmod go-w, or choose another path"
    )]
    Unsafe { log: PathBuf, untrusted: Untrusted },
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

/// Where a hash kept elsewhere stands in a chain: the entry that has it, or None when no
/// entry has it (the log was rewritten, or the hash is another log's).
pub fn find(path: &Path, hash: &str) -> Result<Option<u64>, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.into(),
        source,
    })?;
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(entry) = serde_json::from_str::<Line>(&line)
            && entry.hash == hash
        {
            return Ok(Some(entry.body.seq));
        }
    }
    Ok(None)
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
    /// Called with each entry once it is on disk (a copy that leaves the machine).
    mirrors: Vec<Mirror>,
    file: File,
    seq: u64,
    prev: String,
    uid: u32,
    user: String,
    host: String,
}

/// Where each entry goes too, once on disk (a copy that leaves the machine).
pub type Mirror = Box<dyn FnMut(&Written)>;

/// One entry as written: its place in the chain and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub seq: u64,
    pub hash: String,
    pub prev: String,
    /// The entry's `kind` (`start`, `fault`, ...).
    pub kind: String,
    /// The whole line, as in the file (without the newline).
    pub line: String,
}

impl AuditLog {
    /// Opens (or creates) the log, for `owners` only: a new log is created 0600, in
    /// directories created 0700; an existing log, and every directory above it, must be
    /// owned by them and writable by nobody else (`sys::trust`). An existing log is verified
    /// first, and chaos refuses to add to a broken chain.
    pub fn open(path: &Path, owners: &Owners) -> Result<Self, AuditError> {
        let unsafe_log = |untrusted| AuditError::Unsafe {
            log: path.into(),
            untrusted,
        };
        let io = |source| AuditError::Io {
            path: path.into(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(dir)
            .map_err(io)?;
        }
        trust::check_dir(dir, owners).map_err(unsafe_log)?;
        if path.exists() {
            trust::check_file(path, owners).map_err(unsafe_log)?;
        }
        Self::open_unchecked(path)
    }

    /// As [`Self::open`], without the ownership and mode checks (tests of the chain).
    fn open_unchecked(path: &Path) -> Result<Self, AuditError> {
        let chain = if path.exists() {
            verify(path)?
        } else {
            Chain {
                entries: 0,
                last_hash: GENESIS.into(),
            }
        };
        let file = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().create(true).append(true),
            0o600,
        )
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
            mirrors: Vec::new(),
            file,
            seq: chain.entries,
            prev: chain.last_hash,
            uid: uid.as_raw(),
            user,
            host,
        })
    }

    /// Each entry, once on disk, also goes to `mirror`.
    pub fn mirror_to(&mut self, mirror: Mirror) {
        self.mirrors.push(mirror);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chain so far: its length and last hash (to keep elsewhere, for
    /// `chaos audit verify --expect-hash`).
    pub fn chain(&self) -> Chain {
        Chain {
            entries: self.seq,
            last_hash: self.prev.clone(),
        }
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
        let written = Written {
            seq: entry.body.seq,
            hash: entry.hash.clone(),
            prev: entry.body.prev.clone(),
            kind: entry.body.event["kind"].as_str().unwrap_or_default().into(),
            line: String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
        };
        self.seq = entry.body.seq;
        self.prev = entry.hash;
        for mirror in &mut self.mirrors {
            mirror(&written);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open_unchecked(&path).unwrap();
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
        AuditLog::open_unchecked(&path)
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
            AuditLog::open_unchecked(&path).is_err(),
            "no appending to a broken chain"
        );
        write(&path, &good);
        assert!(verify(&path).is_ok());
    }

    #[test]
    fn a_new_log_is_chaos_alone_and_an_unsafe_one_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let owners = Owners::new(&[0, nix::unistd::getuid().as_raw()]);
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = top.path().join("new/dir/audit.jsonl");
        let mut log = AuditLog::open(&path, &owners).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&top.path().join("new")), 0o700);
        log.append(&Entry::Abort(entry::Abort { reason: "x".into() }))
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = AuditLog::open(&path, &owners).err().unwrap().to_string();
        assert!(err.contains("mode 0620: writable by its group"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        assert!(matches!(
            AuditLog::open(&path, &owners),
            Err(AuditError::Unsafe { .. })
        ));
    }

    #[test]
    fn a_hash_kept_elsewhere_is_found_in_the_chain_or_not() {
        let (_dir, path) = log_of(3);
        let chain = verify(&path).unwrap();
        assert_eq!(find(&path, &chain.last_hash).unwrap(), Some(3));
        assert_eq!(find(&path, GENESIS).unwrap(), None);
        let mut mirrored = Vec::new();
        {
            let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let mut log = AuditLog::open_unchecked(&path).unwrap();
            let copy = seen.clone();
            log.mirror_to(Box::new(move |w: &Written| {
                copy.borrow_mut().push(w.clone())
            }));
            log.append(&Entry::Abort(entry::Abort { reason: "m".into() }))
                .unwrap();
            mirrored.extend(seen.borrow().iter().cloned());
        }
        let last = std::fs::read_to_string(&path).unwrap();
        let last = last.lines().last().unwrap();
        assert_eq!(mirrored.len(), 1);
        assert_eq!((mirrored[0].seq, mirrored[0].kind.as_str()), (4, "abort"));
        assert_eq!(mirrored[0].line, last);
        assert_eq!(mirrored[0].prev, chain.last_hash);
    }
}
