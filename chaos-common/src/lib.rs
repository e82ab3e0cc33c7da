//! Wire types shared by the kernel programs (`chaos-ebpf`) and userspace (`chaos-userspace`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, has no implicit padding and no `bool`/`Option`
//! (their bit patterns are not guaranteed across the kernel boundary), and its size is pinned by
//! a compile-time assertion so that both sides agree on every byte.
#![no_std]

pub mod event;
pub mod inject;
pub mod layout;
pub mod target;

pub use event::*;
pub use inject::*;
pub use layout::*;
pub use target::*;

/// `TASK_COMM_LEN` in include/linux/sched.h.
pub const COMM_LEN: usize = 16;
