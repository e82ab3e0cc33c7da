//! A desktop-style app with a helper it restarts itself, the seed's case: the app is the
//! supervisor, and its crash-prone `sync-helper` the service.
//!
//! `chaos-app --port PORT [--backoff-ms MS]`: starts `sync-helper --port PORT` (found beside
//! this executable) and, whenever it dies, waits MS (default 200) and starts it again.
//! SIGTERM ends the app and its helper.

use std::{path::PathBuf, process::Command, time::Duration};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>().unwrap_or_else(|_| usage()))
    };
    let port = flag("--port").unwrap_or_else(|| usage());
    let backoff = Duration::from_millis(flag("--backoff-ms").unwrap_or(200));
    let helper = helper_path();
    loop {
        let status = Command::new(&helper)
            .args(["--port", &port.to_string()])
            .status();
        match status {
            Ok(s) => eprintln!("chaos-app: sync-helper ended ({s}); restarting"),
            Err(e) => {
                eprintln!("chaos-app: cannot start {}: {e}", helper.display());
                std::process::exit(1);
            }
        }
        // The app's own restart backoff: what the tests measure, not a wait for something.
        std::thread::sleep(backoff);
    }
}

fn helper_path() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    me.with_file_name("sync-helper")
}

fn usage() -> ! {
    eprintln!("usage: chaos-app --port PORT [--backoff-ms MS]");
    std::process::exit(2);
}
