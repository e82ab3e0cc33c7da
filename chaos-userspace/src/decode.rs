//! Ring buffer records (chaos-common wire types) to [`Event`]s.
//!
//! The only place that reads kernel bytes: lengths are checked against the kind before any
//! read, and structs are copied out with `read_unaligned` (a ring buffer record is 8-byte
//! aligned, but a `&[u8]` promises nothing).

use chaos_common::{
    EventHeader, ExecEvent, ExitEvent, ForkEvent, FsyncEvent, InjectEvent, ListenEvent, ReapEvent,
    SignalDeliverEvent, SignalEvent, SyscallErrorEvent, fsync_call, kind, lsm_hook,
};

use crate::{
    event::{
        self, Event, Exec, Exit, Fork, Fsync, Inject, Listen, Reap, Signal, SignalDeliver,
        SyscallError, c_str,
    },
    fault::KernelRule,
    kernel::layout::sync_syscall_name,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than a {what} ({need} bytes)")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("record has unknown kind {0}")]
    UnknownKind(u32),
    #[error("inject record has unknown fault kind {0}")]
    UnknownFault(u32),
}

/// Copies a `T` out of the front of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; T is a plain repr(C) wire type valid for any bit pattern.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes, "header")?;
    Ok(match header.kind {
        kind::FORK => {
            let e: ForkEvent = read(bytes, "fork event")?;
            Event::Fork(Fork {
                ts_ns: header.ts_ns,
                parent_pid: header.pid,
                child_pid: e.child_pid,
            })
        }
        kind::EXEC => {
            let e: ExecEvent = read(bytes, "exec event")?;
            Event::Exec(Exec {
                ts_ns: header.ts_ns,
                pid: header.pid,
                ppid: e.ppid,
                old_pid: e.old_pid,
                comm: c_str(&e.comm),
                filename: c_str(&e.filename),
            })
        }
        kind::EXIT => {
            let e: ExitEvent = read(bytes, "exit event")?;
            Event::Exit(Exit::from_raw(
                header.ts_ns,
                header.pid,
                e.ppid,
                c_str(&e.comm),
                e.exit_code,
                e.lifetime_ns,
                Some(e.unsynced_bytes),
            ))
        }
        kind::SIGNAL => {
            let e: SignalEvent = read(bytes, "signal event")?;
            Event::Signal(Signal {
                ts_ns: header.ts_ns,
                sender_pid: header.pid,
                sender_comm: c_str(&e.sender_comm),
                target_pid: e.target_pid,
                target_comm: c_str(&e.target_comm),
                signal: e.signal,
                signal_name: event::signal_name(e.signal),
                code: e.code,
                group: e.group != 0,
                result: event::signal_result_name(e.result),
            })
        }
        kind::FSYNC => Event::Fsync(decode_fsync(header, read(bytes, "fsync event")?)),
        kind::REAP => {
            let e: ReapEvent = read(bytes, "reap event")?;
            Event::Reap(Reap {
                ts_ns: header.ts_ns,
                pid: header.pid,
                child_pid: e.child_pid,
            })
        }
        kind::LISTEN => {
            let e: ListenEvent = read(bytes, "listen event")?;
            Event::Listen(Listen {
                ts_ns: header.ts_ns,
                pid: header.pid,
                port: e.port as u16,
                // AF_INET6, include/linux/socket.h.
                family: if e.family == 10 { "inet6" } else { "inet" }.into(),
            })
        }
        kind::INJECT => {
            let e: InjectEvent = read(bytes, "inject event")?;
            let rule = KernelRule::from_slot(e.fault).ok_or(DecodeError::UnknownFault(e.fault))?;
            let (what, value) = match rule {
                KernelRule::Trigger => (event::syscall_name(e.what), event::signal_name(e.value)),
                KernelRule::Lsm => (
                    lsm_hook_name(e.what).to_string(),
                    event::errno_name(e.value as i32),
                ),
            };
            Event::Inject(Inject {
                ts_ns: header.ts_ns,
                pid: header.pid,
                tid: e.tid,
                fault: rule,
                what,
                value,
                nth: e.nth,
                dry_run: e.dry_run != 0,
            })
        }
        kind::SYSCALL_ERROR => {
            let e: SyscallErrorEvent = read(bytes, "syscall error event")?;
            Event::SyscallError(SyscallError {
                ts_ns: header.ts_ns,
                pid: header.pid,
                tid: e.tid,
                syscall: event::syscall_name(e.nr),
                ret: e.ret,
                errno: event::errno_name((-e.ret) as i32),
            })
        }
        kind::SIGNAL_DELIVER => {
            let e: SignalDeliverEvent = read(bytes, "signal deliver event")?;
            Event::SignalDeliver(SignalDeliver {
                ts_ns: header.ts_ns,
                pid: header.pid,
                tid: e.tid,
                signal: e.signal,
                signal_name: event::signal_name(e.signal),
                disposition: match e.handler {
                    0 => "default",
                    1 => "ignore",
                    _ => "handler",
                }
                .into(),
            })
        }
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// The LSM hook chaos names in its events and `--help`.
pub fn lsm_hook_name(hook: u32) -> &'static str {
    match hook {
        lsm_hook::FILE_OPEN => "file_open",
        lsm_hook::FILE_READ => "file_permission(read)",
        lsm_hook::FILE_WRITE => "file_permission(write)",
        lsm_hook::SOCKET_CONNECT => "socket_connect",
        lsm_hook::TASK_ALLOC => "task_alloc",
        lsm_hook::BPRM_CHECK => "bprm_check_security",
        lsm_hook::INODE_UNLINK => "inode_unlink",
        lsm_hook::INODE_RENAME => "inode_rename",
        lsm_hook::INODE_MKDIR => "inode_mkdir",
        _ => "unknown",
    }
}

fn decode_fsync(header: EventHeader, e: FsyncEvent) -> Fsync {
    let (call, datasync) = match e.call {
        fsync_call::SYSCALL => {
            let name = sync_syscall_name(e.syscall_nr);
            let datasync = match name {
                Some("fdatasync") => Some(true),
                Some("fsync") => Some(false),
                _ => None,
            };
            (
                name.map_or_else(|| format!("syscall_{}", e.syscall_nr), str::to_string),
                datasync,
            )
        }
        fsync_call::EXT4_SYNC_FILE => (
            "ext4_sync_file".to_string(),
            (e.datasync != u32::MAX).then_some(e.datasync != 0),
        ),
        other => (format!("hook_{other}"), None),
    };
    // dev_t inside the kernel is major << 20 | minor (include/linux/kdev_t.h MINORBITS).
    let dev = (e.dev != 0).then(|| format!("{}:{}", e.dev >> 20, e.dev & ((1 << 20) - 1)));
    Fsync {
        ts_ns: header.ts_ns,
        pid: header.pid,
        call,
        fd: (e.fd >= 0).then_some(e.fd),
        dev,
        ino: (e.ino != 0).then_some(e.ino),
        datasync,
        latency_ns: e.latency_ns,
        ret: e.ret,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chaos_common::{COMM_LEN, FILENAME_LEN};

    use super::*;

    pub fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value without padding.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn header(kind: u32, pid: u32) -> EventHeader {
        EventHeader {
            ts_ns: 1_000,
            kind,
            pid,
        }
    }

    fn name<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0; N];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn decodes_every_kind() {
        let fork = ForkEvent {
            header: header(kind::FORK, 10),
            child_pid: 11,
            _pad: 0,
        };
        assert_eq!(
            decode(&bytes_of(&fork)).unwrap(),
            Event::Fork(Fork {
                ts_ns: 1_000,
                parent_pid: 10,
                child_pid: 11
            })
        );

        let exec = ExecEvent {
            header: header(kind::EXEC, 11),
            ppid: 10,
            old_pid: 11,
            comm: name::<COMM_LEN>("true"),
            filename: name::<FILENAME_LEN>("/bin/true"),
        };
        let Event::Exec(e) = decode(&bytes_of(&exec)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.comm.as_str(), e.filename.as_str(), e.ppid),
            ("true", "/bin/true", 10)
        );

        let exit = ExitEvent {
            header: header(kind::EXIT, 11),
            ppid: 10,
            exit_code: 0x80 | 6,
            lifetime_ns: 42,
            comm: name::<COMM_LEN>("victim"),
            unsynced_bytes: 4096,
        };
        let Event::Exit(e) = decode(&bytes_of(&exit)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                e.signal,
                e.core_dumped,
                e.exit_code,
                e.lifetime_ns,
                e.unsynced_bytes
            ),
            (6, true, 0, 42, Some(4096))
        );

        let reap = ReapEvent {
            header: header(kind::REAP, 10),
            child_pid: 11,
            _pad: 0,
        };
        assert_eq!(
            decode(&bytes_of(&reap)).unwrap(),
            Event::Reap(Reap {
                ts_ns: 1_000,
                pid: 10,
                child_pid: 11
            })
        );
        let listen = ListenEvent {
            header: header(kind::LISTEN, 11),
            port: 8080,
            family: 10,
        };
        assert_eq!(
            decode(&bytes_of(&listen)).unwrap(),
            Event::Listen(Listen {
                ts_ns: 1_000,
                pid: 11,
                port: 8080,
                family: "inet6".into()
            })
        );

        let signal = SignalEvent {
            header: header(kind::SIGNAL, 20),
            target_pid: 11,
            signal: 9,
            code: 0,
            result: 0,
            group: 1,
            _pad: 0,
            sender_comm: name::<COMM_LEN>("killer"),
            target_comm: name::<COMM_LEN>("victim"),
        };
        let Event::Signal(e) = decode(&bytes_of(&signal)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                e.sender_pid,
                e.target_pid,
                e.signal_name.as_str(),
                e.result.as_str()
            ),
            (20, 11, "SIGKILL", "delivered")
        );
        assert!(e.group);
    }

    #[test]
    fn decodes_fsync_from_both_hooks() {
        let ext4 = FsyncEvent {
            header: header(kind::FSYNC, 7),
            call: fsync_call::EXT4_SYNC_FILE,
            syscall_nr: 0,
            fd: -1,
            dev: (254 << 20) | 1,
            ino: 1234,
            datasync: 1,
            _pad: 0,
            latency_ns: 500,
            ret: 0,
        };
        let Event::Fsync(e) = decode(&bytes_of(&ext4)).unwrap() else {
            panic!()
        };
        assert_eq!(e.call, "ext4_sync_file");
        assert_eq!(
            (e.fd, e.dev.as_deref(), e.ino, e.datasync),
            (None, Some("254:1"), Some(1234), Some(true))
        );

        let sys = FsyncEvent {
            call: fsync_call::SYSCALL,
            syscall_nr: libc::SYS_fsync as u32,
            fd: 3,
            dev: 0,
            ino: 0,
            datasync: u32::MAX,
            ret: -5,
            ..ext4
        };
        let Event::Fsync(e) = decode(&bytes_of(&sys)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.call.as_str(), e.fd, e.dev, e.datasync, e.ret),
            ("fsync", Some(3), None, Some(false), -5)
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let fork = ForkEvent {
            header: header(kind::FORK, 10),
            child_pid: 11,
            _pad: 0,
        };
        let bytes = bytes_of(&fork);
        assert_eq!(
            decode(&bytes[..20]).unwrap_err(),
            DecodeError::Short {
                what: "fork event",
                len: 20,
                need: 24
            }
        );
        assert_eq!(
            decode(&bytes[..8]).unwrap_err(),
            DecodeError::Short {
                what: "header",
                len: 8,
                need: 16
            }
        );
        let unknown = EventHeader {
            ts_ns: 0,
            kind: 99,
            pid: 0,
        };
        assert_eq!(
            decode(&bytes_of(&unknown)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
    }
}
