//! The service being measured: how its instances are recognised, who supervises them, and
//! what "ready" means. Written at the head of a recording so that a replay needs no flags.

use serde::{Deserialize, Serialize};

/// When a new instance counts as recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ready {
    /// The replacement exec'd the service's program (kernel timestamp).
    Exec,
    /// The replacement put a TCP socket in LISTEN state (kernel timestamp).
    Listen,
    /// A TCP connect to this address succeeded (probed from userspace, CLOCK_MONOTONIC).
    Tcp { addr: String },
    /// This shell command exited 0 (probed from userspace, CLOCK_MONOTONIC).
    Cmd { command: String },
    /// The systemd unit is active and running (`--unit` only): systemd's own
    /// ActiveEnterTimestampMonotonic, read when its PropertiesChanged signal comes.
    Unit,
}

impl Ready {
    /// Parses `exec`, `listen`, `tcp:HOST:PORT` or `cmd:COMMAND`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "exec" {
            return Ok(Ready::Exec);
        }
        if text == "listen" {
            return Ok(Ready::Listen);
        }
        if text == "unit" {
            return Ok(Ready::Unit);
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            let valid = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!(
                    "--ready {text}: give tcp:HOST:PORT, for example tcp:127.0.0.1:8080"
                ));
            }
            return Ok(Ready::Tcp { addr: addr.into() });
        }
        if let Some(command) = text.strip_prefix("cmd:") {
            if command.trim().is_empty() {
                return Err(format!("--ready {text}: the command is empty"));
            }
            return Ok(Ready::Cmd {
                command: command.into(),
            });
        }
        Err(format!(
            "--ready {text}: give exec, listen, tcp:HOST:PORT, cmd:COMMAND or unit"
        ))
    }

    /// Whether userspace has to probe for readiness (no kernel event says it).
    pub fn is_probed(&self) -> bool {
        matches!(self, Ready::Tcp { .. } | Ready::Cmd { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Ready::Exec => "exec".into(),
            Ready::Listen => "listen".into(),
            Ready::Tcp { addr } => format!("tcp:{addr}"),
            Ready::Cmd { command } => format!("cmd:{command}"),
            Ready::Unit => "unit".into(),
        }
    }
}

impl Service {
    /// The service as found, with how readiness is seen and for how long.
    pub fn of(
        found: &super::discover::Found,
        ready: &Ready,
        recovery_timeout: std::time::Duration,
        data_dir: Option<std::path::PathBuf>,
    ) -> Self {
        let mut ports = found.ports.clone();
        if let Ready::Tcp { addr } = ready
            && let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok())
        {
            ports.push(port);
        }
        ports.sort_unstable();
        ports.dedup();
        Self {
            comm: found.comm.clone(),
            supervisors: found.supervisors.clone(),
            explicit_supervisors: found.explicit,
            instances: found.instances.clone(),
            ready: ready.clone(),
            recovery_timeout_ns: recovery_timeout.as_nanos() as u64,
            workers: found.workers.clone(),
            ports,
            data_dir,
            unit: None,
        }
    }
}

/// An instance alive when measurement began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialInstance {
    pub pid: u32,
    pub supervisor: u32,
    /// The supervisor's direct child this instance is (itself, or the shell that runs it).
    pub child: u32,
}

/// Everything the episode logic needs to know beyond the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The command name (comm) an exec must have to be a new instance.
    pub comm: String,
    /// Supervisors whose descendants may be instances. When `explicit`, an instance appearing
    /// anywhere else is ignored; otherwise its parent becomes a supervisor.
    pub supervisors: Vec<u32>,
    pub explicit_supervisors: bool,
    pub instances: Vec<InitialInstance>,
    pub ready: Ready,
    pub recovery_timeout_ns: u64,
    /// Descendants of the instances when measurement began (workers), so that they are
    /// known as the instances' when they outlive one.
    #[serde(default)]
    pub workers: Vec<InitialWorker>,
    /// The TCP ports the service listens on: whoever holds one answers a `tcp:` or `cmd:`
    /// probe, so a probe that passes while only others hold them is not the new instance's.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Where the service keeps its data (what an orphan still has open there is named).
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The systemd unit it is (`--unit`), as systemd described it at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<crate::systemd::UnitInfo>,
}

/// A descendant of an instance, alive when measurement began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialWorker {
    pub pid: u32,
    pub parent: u32,
    pub comm: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_readiness() {
        assert_eq!(Ready::parse("exec").unwrap(), Ready::Exec);
        assert_eq!(
            Ready::parse("tcp:127.0.0.1:80").unwrap(),
            Ready::Tcp {
                addr: "127.0.0.1:80".into()
            }
        );
        assert_eq!(
            Ready::parse("cmd:curl -sf localhost").unwrap(),
            Ready::Cmd {
                command: "curl -sf localhost".into()
            }
        );
        assert_eq!(Ready::parse("unit").unwrap(), Ready::Unit);
        for bad in ["tcp:80", "tcp:host:99999", "cmd: ", "http", ""] {
            let err = Ready::parse(bad).unwrap_err();
            assert!(err.starts_with(&format!("--ready {bad}:")), "{err}");
        }
    }
}
