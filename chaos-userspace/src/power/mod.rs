//! The power-loss fault's disk: the service's data directory on an ext4 filesystem that
//! chaos makes on a dm-flakey device over a loop file, and the cut itself.
//!
//! - [`preflight`]: device-mapper's flakey target, loop devices and the tools (`dmsetup`,
//!   `mkfs.ext4`); what `chaos doctor` reports and what a power_loss experiment is refused
//!   without (exit 2), before its target is looked up.
//! - [`Disk::create`], before the baseline: a preallocated image under /var/tmp, a loop
//!   device, a flakey device that passes everything, ext4 on it. The data directory's
//!   contents move onto it with the service frozen; the instances that held files there are
//!   killed so that their supervisor starts them again on the new filesystem (the original
//!   directory stays reachable through a private bind mount).
//! - [`Disk::cut`], the fault, in the order that keeps every synced write and nothing else:
//!   freeze the service's cgroup (until `cgroup.events` says frozen, it can acknowledge
//!   nothing after the cut); suspend the device without freezing the filesystem (a lockfs
//!   would write back the dirty pages the cut is about) and load a table that drops every
//!   write; SIGKILL the frozen service; unmount (ext4's last writes are dropped too), drop
//!   the device's buffers, restore the table, mount again (journal recovery); thaw, which
//!   releases the supervisor, held frozen with the service so that no replacement starts on
//!   the bare mount point.
//! - [`Disk::teardown`], on every end (the watchdog runs it when chaos is SIGKILLed, in
//!   whatever step of a cut): the device resumed, remounted if a cut left it unmounted; the
//!   service frozen and killed once more (it holds the mount), the original directory made
//!   to hold exactly what the disk holds, everything unmounted, unmapped, detached and
//!   removed, and the service thawed, to be restarted on its own directory.
//!
//! [`cgroup`] freezes and says whom a cut kills; `files` who holds what under the data
//! directory and the copies; `preflight` the tools.
//!
//! The device-mapper steps run `dmsetup` (with udev out of the loop: chaos makes its own
//! device node) and the filesystem `mkfs.ext4`, the tools xfstests' power failure tests
//! drive; the loop device is bound through its ioctls ([`loopdev`]).

pub mod cgroup;
mod files;
mod loopdev;
mod preflight;

use files::{copy_contents, elsewhere, holders, holds, mounted_source, restore};
pub use preflight::{Preflight, preflight};
use preflight::{dmsetup, tool};

use std::{
    cell::Cell,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::sys::clock::monotonic_ns;

/// The smallest filesystem a power_loss experiment may ask for (ext4 with a journal).
pub const MIN_SIZE: u64 = 16 << 20;

/// When each step of a power cut happened (CLOCK_MONOTONIC), whom it killed, and the
/// step that failed, if one did (the device and the mount were put back, the service
/// thawed). A step not reached has no time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The freeze was asked for.
    pub freeze_ns: u64,
    /// `cgroup.events` said frozen.
    pub frozen_ns: Option<u64>,
    /// The cut: the device was suspended, and every write it had not completed by then
    /// was dropped (held back by the suspension, then sent through the dropping table).
    pub cut_ns: Option<u64>,
    /// The filesystem is mounted again, its journal recovered.
    pub remounted_ns: Option<u64>,
    /// The service (and its supervisor) thawed.
    pub thawed_ns: Option<u64>,
    /// The processes killed at the cut.
    pub killed: Vec<(u32, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The disk of a power-loss experiment: everything [`Disk::teardown`] needs, also sent to
/// the watchdog as JSON (again whenever it changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub data_dir: PathBuf,
    /// /var/tmp/chaos-power-PID: the image and the original directory's bind mount.
    pub work: PathBuf,
    pub image: PathBuf,
    pub loop_dev: Option<PathBuf>,
    pub dm_name: String,
    pub sectors: u64,
    /// The cgroup frozen at a cut.
    pub cgroup: PathBuf,
    /// The supervisors, which a cut freezes and never kills.
    pub keep: Vec<u32>,
    /// chaos made the data directory (it did not exist).
    pub made_dir: bool,
    /// A cut failed after the writes were dropped: the filesystem on the device is not to
    /// be trusted, so the teardown keeps the image and copies nothing back.
    #[serde(default)]
    pub damaged: Cell<bool>,
}

impl Disk {
    pub fn device(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.dm_name)
    }

    fn original(&self) -> PathBuf {
        self.work.join("original")
    }

    fn table(&self, drop_writes: bool) -> String {
        let dev = self
            .loop_dev
            .as_deref()
            .map_or(String::new(), |d| d.display().to_string());
        // flakey: up for 180 s and never down (every I/O passes), or never up with
        // drop_writes (writes complete without reaching the device, reads pass).
        if drop_writes {
            format!("0 {} flakey {dev} 0 0 180 1 drop_writes", self.sectors)
        } else {
            format!("0 {} flakey {dev} 0 180 0", self.sectors)
        }
    }

    /// Swaps the table; returns when the device was suspended: every write it had not
    /// completed by then goes through the new table (the suspension holds it back).
    fn load(&self, drop_writes: bool) -> Result<u64, String> {
        // --nolockfs: no filesystem freeze, which would write the dirty pages back first.
        dmsetup(&["suspend", "--nolockfs", &self.dm_name])?;
        let suspended = monotonic_ns();
        let loaded = dmsetup(&["load", &self.dm_name, "--table", &self.table(drop_writes)]);
        // Resumed whatever the load did: a suspended device blocks every I/O.
        let resumed = dmsetup(&["resume", &self.dm_name]);
        loaded.and(resumed).map(|_| suspended)
    }

    fn mount(&self) -> Result<(), String> {
        nix::mount::mount(
            Some(&self.device()),
            &self.data_dir,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "mount {} on {}: {e}",
                self.device().display(),
                self.data_dir.display()
            )
        })
    }

    /// Whether the data directory is this disk's filesystem now.
    fn mounted(&self) -> bool {
        mounted_source(&self.data_dir).is_some_and(|s| Path::new(&s) == self.device())
    }

    fn mapped(&self) -> bool {
        self.device().exists() || dmsetup(&["info", &self.dm_name]).is_ok()
    }

    /// Unmounts the data directory; a process still holding it gets a moment to finish
    /// dying. Never lazily: a detached filesystem lives on in memory, and mounting the
    /// device again would find it instead of what the device holds.
    fn unmount(&self) -> Result<(), String> {
        let deadline = Instant::now() + cgroup::SETTLE;
        loop {
            match nix::mount::umount(&self.data_dir) {
                Ok(()) => return Ok(()),
                Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    let holders = holders(&self.data_dir);
                    return Err(format!(
                        "umount {}: {e}{}",
                        self.data_dir.display(),
                        if holders.is_empty() {
                            String::new()
                        } else {
                            format!(" (held by {holders})")
                        }
                    ));
                }
            }
        }
    }

    /// Drops the device's cached blocks: what was "written" after the cut must not be read
    /// back from memory.
    fn flush_buffers(&self) -> Result<(), String> {
        let file = std::fs::File::open(self.device())
            .map_err(|e| format!("open {}: {e}", self.device().display()))?;
        const BLKFLSBUF: libc::c_ulong = 0x1261;
        // SAFETY: an ioctl without argument on our fd.
        if unsafe { libc::ioctl(file.as_raw_fd(), BLKFLSBUF, 0) } != 0 {
            return Err(format!("BLKFLSBUF: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Sets the disk up and moves the data directory onto it (see the module's comment);
    /// returns it with the processes killed to restart onto it. `announce` hears of the
    /// disk before anything is made and again as it grows (the watchdog tears down what
    /// exists if chaos dies half-way). Whatever was made is removed again when a step fails.
    pub fn create(
        data_dir: &Path,
        size: u64,
        cgroup: PathBuf,
        keep: Vec<u32>,
        announce: &mut dyn FnMut(&Disk),
    ) -> Result<(Disk, Vec<(u32, String)>), String> {
        let work = PathBuf::from(format!("/var/tmp/chaos-power-{}", std::process::id()));
        let mut disk = Disk {
            data_dir: data_dir.to_path_buf(),
            image: work.join("disk.img"),
            work,
            loop_dev: None,
            dm_name: format!("chaos-power-{}", std::process::id()),
            sectors: size / 512,
            cgroup,
            keep,
            made_dir: !data_dir.exists(),
            damaged: Cell::new(false),
        };
        announce(&disk);
        match disk.build(announce) {
            Ok(moved) => Ok((disk, moved)),
            Err(e) => {
                let problems = disk.teardown();
                Err(if problems.is_empty() {
                    e
                } else {
                    format!("{e}; and while undoing: {}", problems.join("; "))
                })
            }
        }
    }

    fn build(&mut self, announce: &mut dyn FnMut(&Disk)) -> Result<Vec<(u32, String)>, String> {
        if self.made_dir {
            std::fs::create_dir_all(&self.data_dir)
                .map_err(|e| format!("mkdir {}: {e}", self.data_dir.display()))?;
        }
        std::fs::create_dir_all(self.original())
            .map_err(|e| format!("mkdir {}: {e}", self.original().display()))?;
        let image = std::fs::File::create(&self.image)
            .map_err(|e| format!("create {}: {e}", self.image.display()))?;
        // Preallocated: a sparse image could run out of room under the filesystem, and the
        // tool would report the I/O errors as the service's data loss.
        nix::fcntl::fallocate(
            &image,
            nix::fcntl::FallocateFlags::empty(),
            0,
            (self.sectors * 512) as i64,
        )
        .map_err(|e| {
            format!(
                "allocate {} bytes for {}: {e}",
                self.sectors * 512,
                self.image.display()
            )
        })?;
        drop(image);
        self.loop_dev = Some(loopdev::attach(&self.image)?);
        announce(self);
        dmsetup(&["create", &self.dm_name, "--table", &self.table(false)])?;
        tool(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-E", "nodiscard"])
                .arg(self.device()),
        )?;
        let flags = |f| nix::mount::MsFlags::from_bits_truncate(f);
        nix::mount::mount(
            Some(&self.data_dir),
            &self.original(),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "bind {} on {}: {e}",
                self.data_dir.display(),
                self.original().display()
            )
        })?;
        // Private: under a shared parent (systemd's default) the bind would be a peer of
        // the data directory's mount, and the disk mounted there would appear over it too,
        // so that the copies below would copy the disk onto itself.
        nix::mount::mount(
            None::<&str>,
            &self.original(),
            None::<&str>,
            flags(libc::MS_PRIVATE),
            None::<&str>,
        )
        .map_err(|e| format!("make {} private: {e}", self.original().display()))?;
        // The move, with the service frozen: a consistent copy, page cache included, and no
        // instance writes to the old files after it.
        cgroup::freeze(&self.cgroup)
            .map_err(|e| format!("freeze {}: {e}", self.cgroup.display()))?;
        let moved = self.move_in();
        let thawed =
            cgroup::thaw(&self.cgroup).map_err(|e| format!("thaw {}: {e}", self.cgroup.display()));
        let moved = moved?;
        thawed?;
        Ok(moved)
    }

    fn move_in(&self) -> Result<Vec<(u32, String)>, String> {
        let service = cgroup::service(&self.cgroup, &self.keep)?;
        let holding = service.iter().any(|&pid| holds(pid, &self.data_dir));
        let meta = std::fs::metadata(&self.data_dir).map_err(|e| e.to_string())?;
        self.mount()?;
        use std::os::unix::fs::MetadataExt as _;
        let _ = nix::unistd::chown(
            &self.data_dir,
            Some(meta.uid().into()),
            Some(meta.gid().into()),
        );
        let _ = std::fs::set_permissions(
            &self.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode()),
        );
        if !self.original().join("lost+found").exists() {
            let _ = std::fs::remove_dir(self.data_dir.join("lost+found"));
        }
        copy_contents(&self.original(), &self.data_dir)?;
        // The instances with files open on the old directory start again on the new one.
        if !holding {
            return Ok(Vec::new());
        }
        cgroup::kill_all(&service).map_err(|e| e.to_string())
    }

    /// The power cut (see the module's comment) on a service whose process `target` was
    /// chosen. A failure before the cut thaws and changes nothing; a failure after it
    /// marks the disk damaged and leaves the service frozen for the teardown, since
    /// releasing it would start the replacement on a filesystem not recovered (or on the
    /// bare mount point).
    pub fn cut(&self, target: u32) -> Cut {
        let mut cut = Cut {
            freeze_ns: monotonic_ns(),
            frozen_ns: None,
            cut_ns: None,
            remounted_ns: None,
            thawed_ns: None,
            killed: Vec::new(),
            error: None,
        };
        if let Err(e) = cgroup::freeze(&self.cgroup) {
            cut.error = Some(format!("freeze {}: {e}", self.cgroup.display()));
            let _ = cgroup::thaw(&self.cgroup);
            return cut;
        }
        cut.frozen_ns = Some(monotonic_ns());
        let service = match self.ready_to_cut(target) {
            Ok(service) => service,
            Err(e) => {
                cut.error = Some(e);
                let _ = cgroup::thaw(&self.cgroup);
                return cut;
            }
        };
        if let Err(e) = self.cut_frozen(&service, &mut cut) {
            cut.error = Some(e);
            if cut.cut_ns.is_some() {
                // Writes were dropped: the mounted filesystem no longer matches its device.
                // Never give it the device back while mounted; no release.
                self.damaged.set(true);
                return cut;
            }
        }
        match cgroup::thaw(&self.cgroup) {
            Ok(()) => cut.thawed_ns = Some(monotonic_ns()),
            Err(e) => {
                cut.error
                    .get_or_insert(format!("thaw {}: {e}", self.cgroup.display()));
            }
        }
        cut
    }

    /// With the cgroup frozen: the service to kill, once it is sure the cut hits what it
    /// should. The cgroup holds no stranger, the chosen process is in the service, and no
    /// process of it still holds a file of the directory as it was before the move (it
    /// would write past the disk, and the cut would drop nothing of it).
    fn ready_to_cut(&self, target: u32) -> Result<Vec<u32>, String> {
        let service = cgroup::service(&self.cgroup, &self.keep)?;
        if !service.contains(&target) {
            return Err(format!(
                "process {target} is not in {}, which the cut freezes",
                self.cgroup.display()
            ));
        }
        if !self.mounted() {
            return Err(format!(
                "{} is not on the power-loss disk",
                self.data_dir.display()
            ));
        }
        let stale = elsewhere(&service, &self.data_dir);
        if !stale.is_empty() {
            return Err(format!(
                "{} hold files under {} that are not on the power-loss disk (opened through another path, or before the move)",
                stale
                    .iter()
                    .map(|p| format!("{p} ({})", crate::target::proc::comm_of(*p)))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.data_dir.display()
            ));
        }
        Ok(service)
    }

    fn cut_frozen(&self, service: &[u32], cut: &mut Cut) -> Result<(), String> {
        // A failed load resumes the device on its old table: no cut.
        cut.cut_ns = Some(self.load(true)?);
        cut.killed = cgroup::kill_all(service).map_err(|e| e.to_string())?;
        self.unmount()?;
        self.flush_buffers()?;
        self.load(false)?;
        self.mount()?;
        cut.remounted_ns = Some(monotonic_ns());
        Ok(())
    }

    /// Undoes everything [`Disk::create`] did, as far as it got, whatever state a cut left
    /// it in (chaos may have died in the middle of one); each step is tried whatever the
    /// others did. Returns what could not be undone.
    pub fn teardown(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut note = |r: Result<(), String>| {
            if let Err(e) = r {
                problems.push(e);
            }
        };
        let moved = mounted_source(&self.original()).is_some();
        if self.mapped() {
            // A device suspended mid-cut blocks every read and write: resumed first.
            let _ = dmsetup(&["resume", &self.dm_name]);
            if moved && !self.mounted() && !self.damaged.get() {
                // Killed between the unmount and the remount: the device holds what the cut
                // left; mounted again (journal recovery) to bring that home.
                let _ = self.load(false);
                let _ = self.mount();
            }
        }
        let mut keep_image = self.damaged.get();
        if self.mounted() {
            // The service holds the mount: frozen and killed (only the service: a stranger
            // in the cgroup is never touched, and the unmount then says who holds it).
            note(
                cgroup::freeze(&self.cgroup)
                    .map_err(|e| format!("freeze {}: {e}", self.cgroup.display())),
            );
            let service = cgroup::members(&self.cgroup, &self.keep).service;
            note(
                cgroup::kill_all(&service)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
            if moved
                && !self.damaged.get()
                && let Err(e) = restore(&self.data_dir, &self.original())
            {
                keep_image = true;
                note(Err(e));
            }
            note(self.unmount());
        }
        if keep_image {
            note(Err(format!(
                "the run's data is kept in {} (ext4): {}",
                self.image.display(),
                if self.damaged.get() {
                    "a cut failed after dropping writes, so it was not copied back"
                } else {
                    "it could not be copied back"
                }
            )));
        }
        if moved {
            note(
                nix::mount::umount(&self.original())
                    .map_err(|e| format!("umount {}: {e}", self.original().display())),
            );
        }
        let unmapped = !self.mapped() || {
            let removed = dmsetup(&["remove", "--retry", &self.dm_name]).map(|_| ());
            let ok = removed.is_ok();
            note(removed);
            ok
        };
        if let Some(dev) = &self.loop_dev
            && unmapped
            && loopdev::bound_to(dev, &self.image)
        {
            loopdev::detach(dev);
        }
        if !keep_image && unmapped {
            let _ = std::fs::remove_file(&self.image);
            let _ = std::fs::remove_dir(self.original());
            let _ = std::fs::remove_dir(&self.work);
        }
        if self.made_dir && !moved {
            let _ = std::fs::remove_dir(&self.data_dir);
        }
        if self.cgroup.join("cgroup.freeze").exists() {
            note(
                cgroup::thaw(&self.cgroup)
                    .map_err(|e| format!("thaw {}: {e}", self.cgroup.display())),
            );
        }
        problems
    }
}

/// Reads a size: `64MiB`, `1GiB`, `512M`, `100000000` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (for example `64MiB`, `1GiB`)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{other}` is not a unit of size (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
    }

    #[test]
    fn the_tables_pass_everything_then_drop_every_write() {
        let disk = Disk {
            data_dir: "/srv/q".into(),
            work: "/var/tmp/w".into(),
            image: "/var/tmp/w/disk.img".into(),
            loop_dev: Some("/dev/loop3".into()),
            dm_name: "chaos-power-1".into(),
            sectors: 131072,
            cgroup: "/sys/fs/cgroup/q".into(),
            keep: vec![10],
            made_dir: false,
            damaged: Cell::new(false),
        };
        assert_eq!(disk.table(false), "0 131072 flakey /dev/loop3 0 180 0");
        assert_eq!(
            disk.table(true),
            "0 131072 flakey /dev/loop3 0 0 180 1 drop_writes"
        );
        let json = serde_json::to_string(&disk).unwrap();
        assert_eq!(serde_json::from_str::<Disk>(&json).unwrap(), disk);
    }
}
