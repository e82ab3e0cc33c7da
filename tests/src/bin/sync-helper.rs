//! The helper of `chaos-app`: it "syncs" by answering on 127.0.0.1:PORT with the number of
//! connections it served since it started (its readiness is that listen()).
//!
//! `sync-helper --port PORT`

use std::{io::Write as _, net::TcpListener};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = match args.as_slice() {
        [flag, port] if flag == "--port" => port.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("sync-helper: cannot bind 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    });
    for (served, conn) in listener.incoming().enumerate() {
        if let Ok(mut conn) = conn {
            let _ = writeln!(conn, "synced {served}");
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: sync-helper --port PORT");
    std::process::exit(2);
}
