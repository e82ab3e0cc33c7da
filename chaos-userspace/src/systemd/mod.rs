//! systemd units, through systemd's own D-Bus API.
//!
//! chaos talks to the manager on its private socket (`/run/systemd/private`, root only), the
//! one `systemctl` uses as root: it speaks D-Bus peer to peer, needs no dbus-daemon, and the
//! manager sends every signal to it unasked (its messages pass through [`private`], which
//! makes systemd's sender readable to zbus). A unit is resolved to its cgroup, its main pid
//! and its settings ([`UnitInfo`]); while chaos runs, [`watch`] reports each change of its
//! state with systemd's own CLOCK_MONOTONIC timestamps ([`UnitState`]), the clock of the
//! kernel's events.
//!
//! chaos never sends anything to pid 1 but D-Bus method calls that read (`LoadUnit`, `Get`);
//! it never signals it, and pid 1 is never in the target set.

mod private;

use std::{path::PathBuf, time::Duration};

use futures_util::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use zbus::{Connection, MatchRule, MessageStream, Proxy, proxy::CacheProperties};

/// The manager's private socket.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
/// Present when systemd is the init system (sd_booted(3)).
const BOOTED: &str = "/run/systemd/system";
const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error(
        "--unit {0}: this machine does not run systemd ({BOOTED} is missing): name the service with --supervisor, --pid, --comm, --exe or --cgroup"
    )]
    NoSystemd(String),
    #[error("--unit {0}: no such unit (systemd has no unit file for it)")]
    Unknown(String),
    #[error("--unit {name}: a {kind} unit, not a service: name the .service it starts")]
    NotService { name: String, kind: String },
    #[error("--unit {name}: not running (ActiveState {active}, SubState {sub}): start it first")]
    NotRunning {
        name: String,
        active: String,
        sub: String,
    },
    #[error("--unit {name}: {what}: {detail}")]
    Bus {
        name: String,
        what: String,
        detail: String,
    },
}

/// A service unit as systemd describes it when chaos starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// `sync-helper.service`.
    pub name: String,
    /// Its object path on the bus.
    pub path: String,
    /// Its cgroup, relative to the cgroup2 root (`/system.slice/sync-helper.service`).
    pub control_group: PathBuf,
    pub main_pid: u32,
    /// `Type=`: simple, exec, forking, oneshot, dbus, notify, idle.
    pub service_type: String,
    /// `Restart=`: no, on-failure, always, ...
    pub restart: String,
    /// `RestartSec=`, in microseconds.
    pub restart_usec: u64,
    /// `StartLimitBurst=` starts within `StartLimitIntervalSec=` (microseconds).
    pub start_limit_burst: u32,
    pub start_limit_interval_usec: u64,
    /// `NRestarts` when chaos started.
    pub n_restarts: u32,
    /// systemd's version (`252.38-1~deb12u1`).
    pub version: String,
}

impl UnitInfo {
    /// `Type=exec, Restart=on-failure, RestartSec=1s, StartLimitBurst=5 in 10s`.
    pub fn describe(&self) -> String {
        format!(
            "{} (systemd {}): Type={}, Restart={}, RestartSec={}, StartLimitBurst={} in {}",
            self.name,
            self.version,
            self.service_type,
            self.restart,
            humantime::format_duration(Duration::from_micros(self.restart_usec)),
            self.start_limit_burst,
            humantime::format_duration(Duration::from_micros(self.start_limit_interval_usec)),
        )
    }
}

/// The unit's state, each time it changed: what systemd says, with its own timestamps
/// (CLOCK_MONOTONIC, in ns; None where systemd has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    /// When chaos read it (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub active: String,
    pub sub: String,
    /// `Result`: success, exit-code, signal, start-limit-hit, ...
    pub result: String,
    /// The process `ExecMain*` describe.
    pub exec_main_pid: u32,
    pub exec_main_start_ns: Option<u64>,
    pub exec_main_exit_ns: Option<u64>,
    pub active_enter_ns: Option<u64>,
    pub n_restarts: u32,
}

impl UnitState {
    /// Active and running: Type=simple once forked, exec once exec'd, notify at READY=1.
    pub fn is_running(&self) -> bool {
        self.active == "active" && self.sub == "running"
    }
}

/// A unit's name with `.service` added when it has no type suffix.
pub fn unit_name(name: &str) -> String {
    const SUFFIXES: [&str; 11] = [
        ".service",
        ".socket",
        ".target",
        ".timer",
        ".mount",
        ".automount",
        ".swap",
        ".path",
        ".slice",
        ".scope",
        ".device",
    ];
    if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// A connection to the manager's private socket.
pub async fn connect(name: &str) -> Result<Connection, UnitError> {
    if !std::path::Path::new(BOOTED).is_dir() {
        return Err(UnitError::NoSystemd(name.into()));
    }
    let cannot =
        |e: &dyn std::fmt::Display| bus(name, &format!("cannot connect to {PRIVATE_SOCKET}"), e);
    let socket = tokio::net::UnixStream::connect(PRIVATE_SOCKET)
        .await
        .map_err(|e| cannot(&e))?;
    zbus::connection::Builder::socket(private::split(socket))
        .p2p()
        .build()
        .await
        .map_err(|e| cannot(&e))
}

fn bus(name: &str, what: &str, e: impl std::fmt::Display) -> UnitError {
    UnitError::Bus {
        name: name.into(),
        what: what.into(),
        detail: e.to_string(),
    }
}

async fn proxy<'a>(
    conn: &Connection,
    path: &'a str,
    interface: &'a str,
) -> zbus::Result<Proxy<'a>> {
    zbus::proxy::Builder::new(conn)
        .destination(DEST)?
        .path(path)?
        .interface(interface)?
        .cache_properties(CacheProperties::No)
        .build()
        .await
}

/// Resolves `name` (a running service) through the manager.
pub async fn resolve(conn: &Connection, name: &str) -> Result<UnitInfo, UnitError> {
    let full = unit_name(name);
    let kind = full.rsplit('.').next().unwrap_or_default();
    if kind != "service" {
        return Err(UnitError::NotService {
            name: full.clone(),
            kind: format!(".{kind}"),
        });
    }
    let err = |what: &str| {
        let full = full.clone();
        let what = what.to_string();
        move |e: zbus::Error| bus(&full, &what, e)
    };
    let manager = proxy(conn, MANAGER_PATH, MANAGER)
        .await
        .map_err(err("the manager"))?;
    let version: String = manager
        .get_property("Version")
        .await
        .map_err(err("Version"))?;
    let path: zbus::zvariant::OwnedObjectPath = manager
        .call("LoadUnit", &(full.as_str(),))
        .await
        .map_err(err("LoadUnit"))?;
    let path = path.to_string();
    let unit = proxy(conn, &path, UNIT).await.map_err(err("the unit"))?;
    let load: String = unit
        .get_property("LoadState")
        .await
        .map_err(err("LoadState"))?;
    if load == "not-found" {
        return Err(UnitError::Unknown(full));
    }
    let state = read_state(conn, &path).await.map_err(err("its state"))?;
    if state.active != "active" {
        return Err(UnitError::NotRunning {
            name: full,
            active: state.active,
            sub: state.sub,
        });
    }
    let service = proxy(conn, &path, SERVICE)
        .await
        .map_err(err("the service"))?;
    let main_pid: u32 = service
        .get_property("MainPID")
        .await
        .map_err(err("MainPID"))?;
    if main_pid == 0 {
        return Err(UnitError::NotRunning {
            name: full,
            active: state.active,
            sub: format!("{} with no main process", state.sub),
        });
    }
    let control_group: String = service
        .get_property("ControlGroup")
        .await
        .map_err(err("ControlGroup"))?;
    Ok(UnitInfo {
        name: full.clone(),
        path: path.clone(),
        control_group: control_group.into(),
        main_pid,
        service_type: service.get_property("Type").await.map_err(err("Type"))?,
        restart: service
            .get_property("Restart")
            .await
            .map_err(err("Restart"))?,
        restart_usec: service
            .get_property("RestartUSec")
            .await
            .map_err(err("RestartUSec"))?,
        start_limit_burst: unit
            .get_property("StartLimitBurst")
            .await
            .map_err(err("StartLimitBurst"))?,
        start_limit_interval_usec: unit
            .get_property("StartLimitIntervalUSec")
            .await
            .map_err(err("StartLimitIntervalUSec"))?,
        n_restarts: state.n_restarts,
        version,
    })
}

/// Resolves `name` now, from a thread with no runtime (the command's checks): a runtime of
/// its own, gone (its threads joined) before this returns, so a command that forks later is
/// single-threaded again.
pub fn resolve_now(name: &str) -> Result<UnitInfo, UnitError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| bus(name, "cannot start a runtime", e))?;
    runtime.block_on(async {
        let conn = connect(name).await?;
        resolve(&conn, name).await
    })
}

/// The unit's cgroup directory, under the cgroup2 mount.
pub fn cgroup_dir(unit: &UnitInfo) -> Result<PathBuf, UnitError> {
    let mount = crate::target::cgroup2_mount().ok_or_else(|| UnitError::Bus {
        name: unit.name.clone(),
        what: "its cgroup".into(),
        detail: "no cgroup2 filesystem is mounted".into(),
    })?;
    let relative = unit
        .control_group
        .strip_prefix("/")
        .unwrap_or(&unit.control_group);
    Ok(mount.join(relative))
}

/// The cgroups of `units` followed by `cgroups` (`--unit` and `--cgroup` of observe and
/// inject: a unit is its cgroup there).
pub fn with_unit_cgroups(
    cgroups: Vec<PathBuf>,
    units: &[String],
) -> Result<Vec<PathBuf>, UnitError> {
    let mut all = cgroups;
    for name in units {
        all.push(cgroup_dir(&resolve_now(name)?)?);
    }
    Ok(all)
}

/// microseconds of CLOCK_MONOTONIC (0: never) to ns.
fn mono(usec: u64) -> Option<u64> {
    (usec != 0).then(|| usec.saturating_mul(1000))
}

/// The unit's state now.
pub async fn read_state(conn: &Connection, path: &str) -> zbus::Result<UnitState> {
    let unit = proxy(conn, path, UNIT).await?;
    let service = proxy(conn, path, SERVICE).await?;
    Ok(UnitState {
        ts_ns: crate::sys::clock::monotonic_ns(),
        active: unit.get_property("ActiveState").await?,
        sub: unit.get_property("SubState").await?,
        result: service.get_property("Result").await?,
        exec_main_pid: service.get_property("ExecMainPID").await?,
        exec_main_start_ns: mono(
            service
                .get_property("ExecMainStartTimestampMonotonic")
                .await?,
        ),
        exec_main_exit_ns: mono(
            service
                .get_property("ExecMainExitTimestampMonotonic")
                .await?,
        ),
        active_enter_ns: mono(unit.get_property("ActiveEnterTimestampMonotonic").await?),
        n_restarts: service.get_property("NRestarts").await?,
    })
}

/// Signals held for [`watch`] while it reads the state (zbus stops reading the socket, replies
/// included, when a stream's queue is full).
const SIGNAL_QUEUE: usize = 4096;

/// Sends the unit's state at once, then after each `PropertiesChanged` on its object that
/// changed it, until the receiver goes. A broken connection is reported once, as `Err`.
pub async fn watch(
    conn: Connection,
    path: String,
    tx: tokio::sync::mpsc::UnboundedSender<Result<UnitState, String>>,
) {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .and_then(|b| b.member("PropertiesChanged"))
        .and_then(|b| b.path(path.as_str()))
        .map(|b| b.build());
    let stream = match rule {
        Ok(rule) => MessageStream::for_match_rule(rule, &conn, Some(SIGNAL_QUEUE)).await,
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(format!("cannot watch the unit: {e}")));
            return;
        }
    };
    let mut last: Option<UnitState> = None;
    loop {
        match read_state(&conn, &path).await {
            Ok(state) => {
                let changed = last.as_ref().is_none_or(|l| {
                    UnitState {
                        ts_ns: state.ts_ns,
                        ..l.clone()
                    } != state
                });
                if changed {
                    if tx.send(Ok(state.clone())).is_err() {
                        return;
                    }
                    last = Some(state);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("cannot read the unit's state: {e}")));
                return;
            }
        }
        if stream.next().await.is_none() {
            let _ = tx.send(Err("systemd closed the connection".into()));
            return;
        }
        // One read of the state answers every signal already queued: the queue never fills
        // while the reads wait for their replies behind it.
        while let Some(Some(_)) = stream.next().now_or_never() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_a_service() {
        assert_eq!(unit_name("sync-helper"), "sync-helper.service");
        assert_eq!(unit_name("a.service"), "a.service");
        assert_eq!(unit_name("a.socket"), "a.socket");
    }
}
