//! Loop devices through their ioctls (linux/loop.h): a free one found with
//! LOOP_CTL_GET_FREE, bound to the image with LOOP_SET_FD, named with LOOP_SET_STATUS64,
//! unbound with LOOP_CLR_FD once the dm device over it is gone. Not autoclear: that would
//! unbind it the moment chaos closes it, before dmsetup opens it. No losetup: busybox's and
//! util-linux's take different options.

use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}
const _: () = assert!(size_of::<LoopInfo64>() == 232);

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Binds `image` to a free loop device; returns its path.
pub fn attach(image: &Path) -> Result<PathBuf, String> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| format!("open {}: {e}", image.display()))?;
    let control =
        File::open("/dev/loop-control").map_err(|e| format!("open /dev/loop-control: {e}"))?;
    // Another process may take the free device first: ask again.
    for _ in 0..16 {
        // SAFETY: an ioctl without argument on our fd.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(os_error("LOOP_CTL_GET_FREE"));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: LOOP_SET_FD takes the backing fd by value.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) } != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(os_error(&format!("LOOP_SET_FD {}", path.display())));
        }
        // SAFETY: plain data, all zeroes is valid.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        info.file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: a valid struct loop_info64 the kernel reads.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &raw const info) } != 0 {
            let why = os_error(&format!("LOOP_SET_STATUS64 {}", path.display()));
            detach(&path);
            return Err(why);
        }
        return Ok(path);
    }
    Err("no free loop device after 16 tries".into())
}

/// Unbinds a loop device (one still in use detaches when its last user closes it).
pub fn detach(dev: &Path) {
    if let Ok(file) = File::open(dev) {
        // SAFETY: an ioctl without argument on our fd.
        unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

/// Whether `dev` is bound to `image` (its sysfs backing_file).
pub fn bound_to(dev: &Path, image: &Path) -> bool {
    let Some(name) = dev.file_name() else {
        return false;
    };
    std::fs::read_to_string(Path::new("/sys/block").join(name).join("loop/backing_file"))
        .is_ok_and(|b| Path::new(b.trim()) == image)
}
