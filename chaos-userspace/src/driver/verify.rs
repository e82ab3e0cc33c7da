//! The verify command of an experiment: run with `sh -c`, passed when it exits 0 within
//! its timeout.

use std::time::Duration;

/// A command to run, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCommand {
    pub command: String,
    pub timeout: Duration,
}

/// Runs the command once: Ok when it exits 0 within the timeout, else why not.
pub async fn run(v: &VerifyCommand) -> Result<(), String> {
    let command = &v.command;
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
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
