//! What a power cut needs of the machine, and running the tools it drives: `dmsetup` (udev
//! left out) and `mkfs.ext4`.

use std::{path::Path, process::Command};

/// What the machine offers the power-loss fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// device-mapper with its flakey target, or why not.
    pub dm_flakey: Result<(), String>,
    /// loop devices, or why not.
    pub loop_devices: Result<(), String>,
    /// dmsetup and mkfs.ext4, or the first one missing.
    pub tools: Result<(), String>,
}

impl Preflight {
    /// Everything a power cut needs, or what is missing (dm-flakey named first).
    pub fn ready(&self) -> Result<(), String> {
        self.dm_flakey.clone()?;
        self.loop_devices.clone()?;
        self.tools.clone()
    }
}

pub(super) fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Loads the modules where the kernel has them as modules (modprobe, if there is one), then
/// looks: `dmsetup targets` must list flakey, /dev/loop-control must exist.
pub fn preflight() -> Preflight {
    if in_path("modprobe") {
        for module in ["dm-flakey", "loop"] {
            let _ = Command::new("modprobe")
                .args(["-q", module])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let tools = ["dmsetup", "mkfs.ext4"]
        .into_iter()
        .find(|t| !in_path(t))
        .map_or(Ok(()), |t| Err(format!("{t} is not installed")));
    let dm_flakey = if !Path::new("/dev/mapper/control").exists()
        && !std::fs::read_to_string("/proc/misc").is_ok_and(|m| m.contains("device-mapper"))
    {
        Err("this kernel has no device-mapper (no /dev/mapper/control; dm-mod and dm-flakey are neither built in nor loadable)".to_string())
    } else if !in_path("dmsetup") {
        Err(
            "dmsetup is not installed (Debian: dmsetup), so the flakey target cannot be set up"
                .to_string(),
        )
    } else {
        match dmsetup(&["targets"]) {
            Ok(list) if list.lines().any(|l| l.starts_with("flakey")) => Ok(()),
            Ok(_) => Err(
                "device-mapper has no flakey target (dm-flakey is neither built in nor loadable)"
                    .to_string(),
            ),
            Err(e) => Err(format!("dmsetup targets: {e}")),
        }
    };
    let loop_devices = if Path::new("/dev/loop-control").exists() {
        Ok(())
    } else {
        Err("this kernel has no loop devices (no /dev/loop-control)".to_string())
    };
    Preflight {
        dm_flakey,
        loop_devices,
        tools,
    }
}

/// Runs a tool; its stdout, or its stderr as the error.
pub(super) fn tool(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}").replace('"', "");
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// dmsetup without udev: no udev rule runs for chaos's device, and dmsetup makes the node
/// under /dev/mapper itself (a guest or a container has no udev at all).
pub(super) fn dmsetup(args: &[&str]) -> Result<String, String> {
    tool(
        Command::new("dmsetup")
            .env("DM_DISABLE_UDEV", "1")
            .args(args),
    )
}
