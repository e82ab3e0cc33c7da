//! Listening TCP sockets and who holds them, from /proc: `/proc/net/tcp` and `tcp6` for the
//! listening sockets (state `0A`) and their inodes, `/proc/PID/fd` for the processes that
//! hold them. A socket is held by every process with an fd on it (a forked worker holds
//! its master's listener).

use std::{collections::HashMap, path::Path};

/// TCP_LISTEN in include/net/tcp_states.h, as /proc/net/tcp prints it.
const LISTEN: &str = "0A";

/// Every listening TCP socket's inode, with its port.
pub fn listening(proc: &Path) -> HashMap<u64, u16> {
    let mut out = HashMap::new();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc.join(table)) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(parse_line));
    }
    out
}

/// One line of /proc/net/tcp: `sl local_address rem_address st ... inode`, the local
/// address as `HEXADDR:HEXPORT`; (inode, port) of a listening socket.
fn parse_line(line: &str) -> Option<(u64, u16)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&LISTEN) {
        return None;
    }
    let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some((inode, port))
}

/// The socket inodes among `pid`'s fds.
pub fn socket_inodes(proc: &Path, pid: u32) -> Vec<u64> {
    std::fs::read_dir(proc.join(pid.to_string()).join("fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|link| {
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The listening ports `pid` holds.
pub fn ports_of(proc: &Path, pid: u32, listening: &HashMap<u64, u16>) -> Vec<u16> {
    let mut ports: Vec<u16> = socket_inodes(proc, pid)
        .iter()
        .filter_map(|inode| listening.get(inode).copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The processes that hold a listening socket on one of `ports`.
pub fn holders(proc: &Path, ports: &[u16]) -> Vec<u32> {
    let listening = listening(proc);
    let inodes: Vec<u64> = listening
        .iter()
        .filter(|(_, port)| ports.contains(port))
        .map(|(inode, _)| *inode)
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut pids: Vec<u32> = super::proc::pids(proc)
        .filter(|&pid| socket_inodes(proc, pid).iter().any(|i| inodes.contains(i)))
        .collect();
    pids.sort_unstable();
    pids
}

/// The files under `dir` that `pid` has open.
pub fn files_under(proc: &Path, pid: u32, dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(proc.join(pid.to_string()).join("fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|link| link.starts_with(dir))
        .map(|link| link.display().to_string())
        .collect();
    files.sort();
    files.dedup();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_sockets_and_this_process_holds_its_own() {
        assert_eq!(
            parse_line(
                "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0"
            ),
            Some((12345, 8080))
        );
        assert_eq!(
            parse_line(
                "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12346 1"
            ),
            None,
            "an established connection"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proc = Path::new("/proc");
        let me = std::process::id();
        assert_eq!(ports_of(proc, me, &listening(proc)), [port]);
        assert!(holders(proc, &[port]).contains(&me));
    }
}
