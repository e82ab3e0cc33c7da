//! Access to the load-time [`Layout`] and to kernel memory at the offsets it names.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
};
use chaos_common::{ABSENT, Layout, counter};

use crate::maps::count;

/// Filled in by userspace before load (`EbpfLoader::override_global`); read-only afterwards,
/// so the verifier sees constants.
#[unsafe(no_mangle)]
pub static LAYOUT: Layout = Layout::absent();

/// The offset of one [`Layout`] field. Volatile, so the compiler does not fold the placeholder
/// value compiled into the object; the verifier then sees the value userspace wrote.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a plain read of our own global.
        unsafe { core::ptr::read_volatile(&raw const $crate::layout::LAYOUT.$field) }
    };
}
pub(crate) use offset;

/// Reads a `T` at `offset` in a tracepoint record. An absent field or a failed read is counted
/// and returned as an error, so the caller drops the event instead of reporting garbage.
#[inline(always)]
pub fn tp_field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, ()> {
    if offset == ABSENT {
        count(counter::READ_ERRORS);
        return Err(());
    }
    // SAFETY: the offset comes from the tracepoint's format file; the helper checks the read.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| count(counter::READ_ERRORS))
}

/// Copies a `__data_loc char[]` tracepoint field (u32: offset in the low half, length in the
/// high half, see include/trace/trace_events.h) into `dst`.
#[inline(always)]
pub fn tp_data_loc_str(ctx: &TracePointContext, offset: u32, dst: &mut [u8]) -> Result<(), ()> {
    let loc: u32 = tp_field(ctx, offset)?;
    let start = (loc & 0xffff) as usize;
    // SAFETY: `start` is inside the record the kernel handed us; the helper bounds the copy.
    unsafe { bpf_probe_read_kernel_str_bytes(ctx.as_ptr().cast::<u8>().add(start), dst) }
        .map(|_| ())
        .map_err(|_| count(counter::READ_ERRORS))
}

/// Copies a fixed `char[N]` tracepoint field into `dst`.
#[inline(always)]
pub fn tp_bytes(ctx: &TracePointContext, offset: u32, dst: &mut [u8; 16]) -> Result<(), ()> {
    *dst = tp_field::<[u8; 16]>(ctx, offset)?;
    Ok(())
}

/// Reads a `T` at `offset` in a kernel object (a `task_struct`, say) found through BTF.
#[inline(always)]
pub fn kernel_field<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    if base.is_null() || offset == ABSENT {
        count(counter::READ_ERRORS);
        return Err(());
    }
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()) }
        .map_err(|_| count(counter::READ_ERRORS))
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: always valid in tracing programs.
    unsafe { bpf_get_current_task() as *const u8 }
}
