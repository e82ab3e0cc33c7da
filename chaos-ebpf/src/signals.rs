//! Signals: who sent what to whom (signal:signal_generate, kernel/signal.c).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use chaos_common::{SignalDeliverEvent, SignalEvent, kind};

use crate::{
    layout::{offset, tp_bytes, tp_field},
    lifecycle::{header, output},
    target,
};

/// Reports a signal when its sender or its recipient is a target, so a kill from outside the
/// target set is seen. `pid` in the record is the recipient task's pid as the kernel resolved
/// it (the thread group leader for kill(2)).
#[tracepoint]
pub fn chaos_signal_generate(ctx: TracePointContext) -> u32 {
    let _ = try_signal_generate(&ctx);
    0
}

fn try_signal_generate(ctx: &TracePointContext) -> Result<(), ()> {
    let target_pid: i32 = tp_field(ctx, offset!(sig_pid))?;
    let sender = target::current_tgid();
    if !target::is_target(target_pid as u32) && !target::is_target(sender) {
        return Ok(());
    }
    let mut event = SignalEvent {
        header: header(kind::SIGNAL, sender),
        target_pid: target_pid as u32,
        signal: tp_field::<i32>(ctx, offset!(sig_sig))? as u32,
        code: tp_field(ctx, offset!(sig_code))?,
        result: tp_field(ctx, offset!(sig_result))?,
        group: tp_field::<i32>(ctx, offset!(sig_group))? as u32,
        _pad: 0,
        sender_comm: target::current_comm(),
        target_comm: [0; 16],
    };
    tp_bytes(ctx, offset!(sig_comm), &mut event.target_comm)?;
    output(&event);
    Ok(())
}

/// signal:signal_deliver: a target dequeued a signal to act on it (kernel/signal.c,
/// get_signal()). Runs in the target's own context on its way back to user mode, so it is the
/// proof of a signal sent from inside another program (bpf_send_signal), where the
/// signal_generate program cannot run nested.
#[tracepoint]
pub fn chaos_signal_deliver(ctx: TracePointContext) -> u32 {
    let _ = try_signal_deliver(&ctx);
    0
}

fn try_signal_deliver(ctx: &TracePointContext) -> Result<(), ()> {
    let tgid = target::current_tgid();
    if !target::is_target(tgid) {
        return Ok(());
    }
    output(&SignalDeliverEvent {
        header: header(kind::SIGNAL_DELIVER, tgid),
        tid: bpf_get_current_pid_tgid() as u32,
        signal: tp_field::<i32>(ctx, offset!(deliver_sig))? as u32,
        handler: tp_field(ctx, offset!(deliver_handler))?,
    });
    Ok(())
}
