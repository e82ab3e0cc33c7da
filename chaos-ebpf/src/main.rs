//! Kernel programs of chaos: lifecycle, signal and fsync observation, plus the tiny programs
//! `chaos doctor` loads to learn what the running kernel allows.
//!
//! Every program is a thin entry point calling a `try_` function. A failure is counted in the
//! per-CPU `COUNTERS` array that userspace reports; nothing is dropped silently.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the bpf target has no atomic read-modify-write in core::sync"
)]

mod fsync;
mod inject;
mod layout;
mod lifecycle;
mod maps;
mod probes;
mod recovery;
mod signals;
mod target;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this: it has no way back.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
