//! The kernel matrix: Debian's cloud kernels 6.1 and 6.12 booted under QEMU, the privileged
//! observer suite run inside, and the verdict read back over the serial console.
//!
//! - Kernels: the newest `linux-image-<series>.*-cloud-amd64-unsigned` in the apt index,
//!   fetched with `apt-get download` into `target/vm/` once and unpacked with `dpkg-deb -x`.
//! - Guest: a busybox-static initramfs holding `chaos`, the test executables and the programs
//!   they run, each at the path it has here (the tests name binaries by absolute path), with the
//!   shared libraries `ldd` names; `guest-init.sh` is its /init.
//! - QEMU always runs with `-accel tcg`: /dev/kvm on these machines is a nested software
//!   hypervisor, measured about 300 times slower than QEMU's own emulation.
//! - Verdict: /init prints `CHAOS-GUEST-RESULT rc=N` and powers off. No such line before QEMU
//!   exits (a panic, a hang past the timeout) fails the run and shows the console's end.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, Tally, output};

/// The guest kernels `cargo xtask test --kernel all` boots, by series.
pub const SERIES: [&str; 2] = ["6.1", "6.12"];
/// Longest a guest may run (boot, doctor, the suite); about 2 minutes here.
const GUEST_TIMEOUT: Duration = Duration::from_secs(25 * 60);
const VERDICT: &str = "CHAOS-GUEST-RESULT rc=";
const INIT: &str = include_str!("guest-init.sh");
const SYSTEMD_RUNNER: &str = include_str!("guest-systemd.sh");
/// The unit systemd starts in the systemd guest (`systemd.unit=` on the kernel command line).
const SYSTEMD_UNIT: &str = "[Unit]
Description=chaos's test suites under systemd
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/chaos-tests.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
";

/// What runs as pid 1 in a guest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// busybox sh running `guest-init.sh`.
    Busybox,
    /// The host's systemd, running `guest-systemd.sh` as a unit.
    Systemd,
}

impl Init {
    /// The kernel command line.
    fn append(self) -> &'static str {
        match self {
            Init::Busybox => "console=ttyS0 panic=-1 quiet",
            Init::Systemd => {
                "console=ttyS0 panic=-1 quiet rdinit=/lib/systemd/systemd systemd.unit=chaos-tests.service systemd.show_status=false"
            }
        }
    }
}
/// Host programs the guest needs besides the payload, with their shared libraries.
const HOST_TOOLS: [&str; 2] = ["bpftool", "mkfs.ext4"];

/// A Debian cloud kernel, unpacked.
pub struct Kernel {
    pub package: String,
    /// `uname -r` of the guest.
    pub release: String,
    root: PathBuf,
}

impl Kernel {
    /// The newest cloud kernel of `series` in the apt index, downloaded and unpacked under
    /// `cache` unless it already is.
    pub fn fetch(series: &str, cache: &Path) -> Result<Self> {
        let package = newest_package(series)?;
        let root = cache.join(&package);
        if !root.join("boot").is_dir() {
            std::fs::create_dir_all(cache)?;
            eprintln!("vm: downloading {package}");
            util::run(
                Command::new("apt-get")
                    .args(["download", "-q", &package])
                    .current_dir(cache),
            )?;
            let deb = std::fs::read_dir(cache)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                    })
                })
                .with_context(|| format!("apt-get download left no .deb of {package}"))?;
            let unpacking = cache.join(format!("{package}.partial"));
            let _ = std::fs::remove_dir_all(&unpacking);
            util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking))?;
            std::fs::rename(&unpacking, &root)?;
            let _ = std::fs::remove_file(&deb);
        }
        let release = std::fs::read_dir(root.join("lib/modules"))?
            .filter_map(Result::ok)
            .find_map(|e| e.file_name().to_str().map(str::to_string))
            .with_context(|| format!("{package} has no lib/modules"))?;
        Ok(Self {
            package,
            release,
            root,
        })
    }

    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// A module's object, decompressed (busybox insmod takes plain .ko files).
    fn module(&self, path: &str) -> Result<Vec<u8>> {
        let base = self
            .root
            .join(format!("lib/modules/{}/kernel/{path}", self.release));
        if base.exists() {
            return Ok(std::fs::read(&base)?);
        }
        let xz = base.with_extension("ko.xz");
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .with_context(|| format!("cannot run xz on {}", xz.display()))?;
        if !out.status.success() {
            bail!("no module {path} in {}", self.package);
        }
        Ok(out.stdout)
    }
}

/// `linux-image-6.1.0-57-cloud-amd64-unsigned` for "6.1": the highest version listed.
fn newest_package(series: &str) -> Result<String> {
    let pattern = format!(
        "^linux-image-{}\\.[0-9].*-cloud-amd64-unsigned$",
        series.replace('.', "\\.")
    );
    let search = || {
        output("apt-cache", &["search", "--names-only", &pattern])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let mut names = search();
    if names.is_empty() {
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
        names = search();
    }
    // Compare the numbers in the names: 6.1.0-57 after 6.1.0-9, 6.12.113 after 6.12.107.
    let key = |name: &str| {
        name.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    names
        .into_iter()
        .max_by_key(|n| key(n))
        .with_context(|| format!("no Debian cloud kernel {series} in the apt index ({pattern})"))
}

/// What goes into the guest besides busybox and the host tools.
pub struct Payload {
    pub init: Init,
    pub chaos: PathBuf,
    /// Programs the tests run (victims and the like), at their host paths.
    pub programs: Vec<PathBuf>,
    /// Test executables, run in order with `--test-threads=1`.
    pub tests: Vec<PathBuf>,
}

/// Builds the initramfs for `kernel` under `work`; returns its path.
pub fn initramfs(kernel: &Kernel, payload: &Payload, work: &Path) -> Result<PathBuf> {
    let tag = match payload.init {
        Init::Busybox => "",
        Init::Systemd => "-systemd",
    };
    let stage = work.join(format!("stage-{}{tag}", kernel.release));
    let _ = std::fs::remove_dir_all(&stage);
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib/modules",
        "proc",
        "root",
        "sys",
        "tmp",
        "usr/sbin",
        "var/tmp",
    ] {
        std::fs::create_dir_all(stage.join(dir))?;
    }
    let busybox = which("busybox")?;
    let applets = output(busybox.to_str().unwrap(), &["--list"])
        .context("busybox --list (busybox-static)")?;
    std::fs::copy(&busybox, stage.join("bin/busybox"))?;
    for applet in applets.lines() {
        let link = stage.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::os::unix::fs::symlink("bin", stage.join("sbin"))?;
    std::os::unix::fs::symlink("../bin", stage.join("usr/bin"))?;

    let binaries = std::iter::once(&payload.chaos)
        .chain(&payload.programs)
        .chain(&payload.tests);
    for binary in binaries {
        stage_elf(&stage, binary, binary)?;
    }
    for tool in HOST_TOOLS {
        let path = which(tool)?;
        stage_elf(&stage, &path, &Path::new("/usr/sbin").join(tool))?;
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        std::fs::copy("/etc/mke2fs.conf", stage.join("etc/mke2fs.conf"))?;
    }
    std::fs::write(
        stage.join("lib/modules/loop.ko"),
        kernel.module("drivers/block/loop.ko")?,
    )?;
    let tests = payload
        .tests
        .iter()
        .map(|t| t.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let (script, name) = match payload.init {
        Init::Busybox => (INIT, "init"),
        Init::Systemd => {
            stage_systemd(&stage)?;
            (SYSTEMD_RUNNER, "chaos-tests.sh")
        }
    };
    let script = script
        .replace("@CHAOS@", &payload.chaos.display().to_string())
        .replace("@TESTS@", &tests);
    let script_path = stage.join(name);
    std::fs::write(&script_path, script)?;
    std::fs::set_permissions(
        &script_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;

    let out = work.join(format!("initramfs-{}{tag}.cpio.gz", kernel.release));
    pack(&stage, &busybox, &out)?;
    Ok(out)
}

/// The host's systemd and systemctl with their libraries, the test unit, and the accounts
/// systemd resolves.
fn stage_systemd(stage: &Path) -> Result<()> {
    let systemd = Path::new("/lib/systemd/systemd");
    if !systemd.exists() {
        bail!(
            "{} not found: the systemd guest boots this machine's systemd",
            systemd.display()
        );
    }
    stage_elf(stage, systemd, systemd)?;
    stage_elf(stage, &which("systemctl")?, Path::new("/bin/systemctl"))?;
    for dir in ["etc/systemd/system", "run", "var/log"] {
        std::fs::create_dir_all(stage.join(dir))?;
    }
    std::fs::write(
        stage.join("etc/systemd/system/chaos-tests.service"),
        SYSTEMD_UNIT,
    )?;
    std::fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(stage.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    std::fs::write(
        stage.join("etc/os-release"),
        "NAME=chaos-test-guest\nID=debian\n",
    )?;
    Ok(())
}

/// Copies an ELF file (without its debug sections) to `guest` under `stage`, with the shared
/// libraries `ldd` names for it.
fn stage_elf(stage: &Path, host: &Path, guest: &Path) -> Result<()> {
    let dest = stage.join(guest.strip_prefix("/").unwrap_or(guest));
    std::fs::create_dir_all(dest.parent().expect("a file path"))?;
    util::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(host),
    )?;
    let ldd = output("ldd", &[host.to_str().unwrap()]).unwrap_or_default();
    for lib in ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(Path::new)
    {
        let dest = stage.join(lib.strip_prefix("/").unwrap_or(lib));
        if !dest.exists() {
            std::fs::create_dir_all(dest.parent().expect("a file path"))?;
            std::fs::copy(lib, &dest).with_context(|| format!("copy {}", lib.display()))?;
        }
    }
    Ok(())
}

/// `find . | busybox cpio -o -H newc | gzip -1 > out`, in `stage`.
fn pack(stage: &Path, busybox: &Path, out: &Path) -> Result<()> {
    let mut entries = Vec::new();
    collect(stage, Path::new("."), &mut entries)?;
    let mut cpio = Command::new(busybox)
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("busybox cpio")?;
    let gzip = Command::new("gzip")
        .arg("-1")
        .stdin(cpio.stdout.take().expect("piped"))
        .stdout(std::fs::File::create(out)?)
        .spawn()
        .context("gzip")?;
    {
        let mut stdin = cpio.stdin.take().expect("piped");
        for entry in &entries {
            writeln!(stdin, "{}", entry.display())?;
        }
    }
    let (c, g) = (cpio.wait()?, gzip.wait_with_output()?.status);
    if !c.success() || !g.success() {
        bail!("packing the initramfs failed (cpio {c}, gzip {g})");
    }
    Ok(())
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(rel.to_path_buf());
    let path = root.join(rel);
    if path.is_dir() && !path.is_symlink() {
        let mut children: Vec<_> = std::fs::read_dir(&path)?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        children.sort();
        for child in children {
            collect(root, &rel.join(child), out)?;
        }
    }
    Ok(())
}

fn which(program: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!("{program} not found: run `cargo xtask setup`")
}

/// Boots `kernel` with `initrd`, echoing the console (and saving it to `log`), and adds the
/// guest's `test result:` lines to `tally`. Fails when the guest's verdict is not 0 or never
/// comes.
pub fn boot(
    kernel: &Kernel,
    init: Init,
    initrd: &Path,
    log: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-machine",
            "pc",
        ])
        .args(["-smp", "2", "-m", "2048", "-display", "none", "-nodefaults"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", init.append()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(qemu.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(qemu.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut console = std::fs::File::create(log)?;
    let mut tail = std::collections::VecDeque::new();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut verdict = None;
    let ended = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                println!("{line}");
                writeln!(console, "{line}")?;
                tally.line(&line);
                if let Some(rc) = line.strip_prefix(VERDICT) {
                    verdict = rc.trim().parse::<i32>().ok();
                }
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break "ended",
            Err(mpsc::RecvTimeoutError::Timeout) => break "timed out",
        }
    };
    // Our own QEMU: end it if it is still there (a hang), then collect it.
    let _ = qemu.kill();
    let _ = qemu.wait();
    match verdict {
        Some(0) => Ok(()),
        Some(rc) => bail!(
            "guest {}: tests failed (rc {rc}); console: {}",
            kernel.release,
            log.display()
        ),
        None => bail!(
            "guest {} {ended} without a verdict; last console lines:\n{}\n(whole console: {})",
            kernel.release,
            Vec::from(tail).join("\n"),
            log.display()
        ),
    }
}
