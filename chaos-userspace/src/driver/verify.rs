//! The verify command of an experiment: run with `sh -c`, passed when it exits 0 within
//! its timeout.

use std::time::Duration;

/// An account a command from an experiment file runs as, instead of root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

impl RunAs {
    /// The account `name` on this machine.
    pub fn lookup(name: &str) -> Result<Self, String> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user {name}: {e}"))?
            .ok_or_else(|| format!("no user {name} on this machine"))?;
        Ok(Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        })
    }

    /// `root` or `NAME (uid N)`, for the plan and the audit log.
    pub fn describe(run_as: Option<&RunAs>) -> String {
        match run_as {
            Some(u) => format!("{} (uid {})", u.name, u.uid),
            None => "root".into(),
        }
    }
}

/// `sh -c COMMAND`, as `run_as` when given (its uid, gid and no other group; HOME, USER
/// and LOGNAME set to its own).
pub fn shell(command: &str, run_as: Option<&RunAs>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null());
    if let Some(u) = run_as {
        // std drops the supplementary groups (setgroups(0)) before it sets the ids.
        cmd.uid(u.uid)
            .gid(u.gid)
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    cmd
}

/// A command to run, how long it may take, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCommand {
    pub command: String,
    pub timeout: Duration,
    pub user: Option<RunAs>,
}

/// Runs the command once: Ok when it exits 0 within the timeout, else why not.
pub async fn run(v: &VerifyCommand) -> Result<(), String> {
    let command = &v.command;
    let child = shell(command, v.user.as_ref())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    match tokio::time::timeout(v.timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{command}` took longer than {}",
            humantime::format_duration(v.timeout)
        )),
        Ok(Err(e)) => Err(format!("`{command}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("`{command}` {}: {}", out.status, last.trim()))
        }
    }
}

/// Runs the command once on a runtime of its own (before the run's runtime exists).
pub fn run_blocking(v: &VerifyCommand) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for `{}`: {e}", v.command))?
        .block_on(run(v))
}
