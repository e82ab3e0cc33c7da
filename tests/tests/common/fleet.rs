//! "Hosts" on this machine: network namespaces joined by a bridge in a hub namespace, each
//! with a host name of its own (a UTS namespace per process started in it). Nothing is
//! bound in the machine's own network namespace: the hub's addresses (10.77.N.0/24) exist
//! only on the veth pairs between these namespaces. Everything is removed when dropped.

use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Stdio},
};

/// A hub namespace with a bridge, and hosts on it.
pub struct Fleet {
    pub hub: String,
    pub hosts: Vec<Host>,
    /// 10.77.`subnet`.0/24.
    subnet: u8,
}

/// One host: its network namespace, its name and its address on the hub's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: String,
    pub name: String,
    pub addr: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fleet {
    /// A hub and one host per name, up and addressed.
    pub fn new(names: &[&str]) -> Self {
        let tag = std::process::id() % 10_000;
        let subnet = (std::process::id() % 200) as u8 + 20;
        let hub = format!("chaos-hub-{tag}");
        let mut fleet = Self {
            hub: hub.clone(),
            hosts: Vec::new(),
            subnet,
        };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{}/24", fleet.hub_addr()),
            "dev",
            "br0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let netns = format!("chaos-{name}-{tag}");
            let addr = format!("10.77.{subnet}.{}", i + 2);
            ip(&["netns", "add", &netns]);
            fleet.hosts.push(Host {
                netns: netns.clone(),
                name: name.to_string(),
                addr: addr.clone(),
            });
            let port = format!("v{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
        }
        fleet
    }

    /// The hub's address on the bridge.
    pub fn hub_addr(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    /// Runs `f` on a thread inside the hub's network namespace (sockets it makes stay
    /// there), and returns what it returns.
    pub fn in_hub<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.hub);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("the hub's netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("the hub thread")
    }
}

impl Host {
    /// The command line that runs `program` on this host: in its network namespace, in a
    /// UTS namespace of its own named after the host (`nsenter` and `unshare` exec, so the
    /// pid is the program's; unlike `ip netns exec`, nsenter leaves the mounts alone, and
    /// chaos needs the machine's tracefs).
    pub fn wrap(&self, program: &[&str]) -> Vec<String> {
        let net = format!("--net=/run/netns/{}", self.netns);
        let mut line: Vec<String> = [
            "nsenter",
            &net,
            "unshare",
            "--uts",
            "sh",
            "-c",
            &format!("hostname {} && exec \"$@\"", self.name),
            "sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        line.extend(program.iter().map(|s| s.to_string()));
        line
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The veth pairs and the bridge go with their namespaces.
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.netns])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub])
            .status();
    }
}
