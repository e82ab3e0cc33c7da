//! The engine's systemd side (`--unit`): the unit's states from D-Bus, with systemd's own
//! timestamps, end and fail episodes beside the kernel's events.

use super::{Engine, Outcome, Output, Ready};
use crate::systemd::UnitState;

/// systemd's timestamps against chaos's, over the episodes that had both (`--unit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offsets {
    pub episodes: u64,
    /// The largest (by magnitude) ExecMainExit - reaped, and ExecMainStart - forked, in ns.
    pub exit_vs_reaped_ns: Option<i64>,
    pub start_vs_forked_ns: Option<i64>,
}

impl Offsets {
    pub(super) fn add(&mut self, (exit, start): (Option<i64>, Option<i64>)) {
        let widest = |kept: &mut Option<i64>, new: Option<i64>| {
            if let Some(n) = new
                && kept.is_none_or(|k| n.abs() > k.abs())
            {
                *kept = Some(n);
            }
        };
        if exit.is_some() || start.is_some() {
            self.episodes += 1;
        }
        widest(&mut self.exit_vs_reaped_ns, exit);
        widest(&mut self.start_vs_forked_ns, start);
    }
}

impl Engine {
    /// The systemd unit's state changed: systemd's timestamps go to the open episodes they
    /// describe; with `--ready unit`, active and running (entered after the death) ends an
    /// episode whose replacement exec'd; a failed unit (StartLimitBurst hit, or no Restart=)
    /// fails every open episode at once.
    pub fn unit(&mut self, state: &UnitState, out: &mut Vec<Output>) {
        self.advance(state.ts_ns, out);
        for open in &mut self.open {
            let times = open.systemd.get_or_insert_default();
            if state.exec_main_pid == open.old_pid && state.exec_main_exit_ns.is_some() {
                times.exec_main_exit_ns = state.exec_main_exit_ns;
            }
            if open.new_pid == Some(state.exec_main_pid) && state.exec_main_start_ns.is_some() {
                times.exec_main_start_ns = state.exec_main_start_ns;
            }
        }
        if let Some(start) = state.exec_main_start_ns
            && !self.unit_starts.contains(&start)
        {
            self.unit_starts.push(start);
        }
        self.unit = Some(state.clone());
        self.unit_check(out);
    }

    /// Ends what the unit's last state decides (see [`Engine::unit`]).
    pub(super) fn unit_check(&mut self, out: &mut Vec<Output>) {
        let Some(state) = self.unit.clone() else {
            return;
        };
        // systemd 254 and later pass through `failed-before-auto-restart` (ActiveState failed)
        // on the way to the restart: not the end.
        if state.active == "failed" && !state.sub.ends_with("-before-auto-restart") {
            let reason = self.unit_failure(&state);
            for mut open in std::mem::take(&mut self.open) {
                open.systemd.get_or_insert_default().result = Some(state.result.clone());
                self.end(open, Outcome::Failed, 0, Some(reason.clone()), out);
            }
            return;
        }
        let (Ready::Unit, true, Some(enter)) = (
            &self.service.ready,
            state.is_running(),
            state.active_enter_ns,
        ) else {
            return;
        };
        while let Some(at) = self
            .open
            .iter()
            .position(|o| o.at.exec.is_some() && o.at.exit.is_some_and(|x| enter >= x))
        {
            let mut open = self.open.remove(at);
            let times = open.systemd.get_or_insert_default();
            times.active_enter_ns = Some(enter);
            if open.new_pid == Some(state.exec_main_pid) {
                times.exec_main_start_ns = state.exec_main_start_ns;
            }
            // Type=simple is active once forked: ready is never before the exec.
            let ready = enter.max(open.at.exec.unwrap_or(enter));
            self.end(open, Outcome::Recovered, ready, None, out);
        }
    }

    /// Why a failed unit's episodes failed, in words.
    /// systemd 252 keeps the death's Result (`signal`) when the restart after it hits the
    /// start limit (the limit is tested before a start resets the result): a unit that would
    /// be restarted, failed after StartLimitBurst starts within StartLimitIntervalSec (by the
    /// ExecMainStart timestamps chaos saw), hit its start limit.
    fn unit_failure(&self, state: &UnitState) -> String {
        let unit = self.service.unit.as_ref();
        let limit = |u: &crate::systemd::UnitInfo| {
            format!(
                " (StartLimitBurst={} starts within {})",
                u.start_limit_burst,
                humantime::format_duration(std::time::Duration::from_micros(
                    u.start_limit_interval_usec
                ))
            )
        };
        let recent = |u: &crate::systemd::UnitInfo| {
            let since = state
                .ts_ns
                .saturating_sub(u.start_limit_interval_usec.saturating_mul(1000));
            self.unit_starts.iter().filter(|&&t| t >= since).count()
        };
        match (state.result.as_str(), unit) {
            ("start-limit-hit", _) => format!(
                "start-limit-hit: systemd stopped restarting the unit{}",
                unit.map_or(String::new(), limit)
            ),
            (result, Some(u))
                if restarts_after(&u.restart, result)
                    && u.start_limit_burst > 0
                    && recent(u) >= u.start_limit_burst as usize =>
            {
                format!(
                    "start-limit-hit: systemd stopped restarting the unit{}: {} starts seen in that time (systemd left Result={result})",
                    limit(u),
                    recent(u)
                )
            }
            (result, _) => format!(
                "the unit failed (Result={result}) and systemd does not restart it{}",
                unit.map_or(String::new(), |u| format!(" (Restart={})", u.restart))
            ),
        }
    }

    /// systemd's timestamps against chaos's so far.
    pub fn offsets(&self) -> Offsets {
        self.offsets
    }

    /// The unit's last state seen.
    pub fn unit_state(&self) -> Option<&UnitState> {
        self.unit.as_ref()
    }
}

/// Whether `Restart=` restarts a service whose main process ended with `result`
/// (systemd.service(5), the table under Restart=). `RestartPreventExitStatus=` is not read:
/// an exit status it names is taken as restarted.
fn restarts_after(restart: &str, result: &str) -> bool {
    let abnormal = ["signal", "core-dump", "timeout", "watchdog"];
    match restart {
        "always" => true,
        "on-success" => result == "success",
        "on-failure" => result != "success",
        "on-abnormal" => abnormal.contains(&result),
        "on-abort" => ["signal", "core-dump"].contains(&result),
        "on-watchdog" => result == "watchdog",
        _ => false,
    }
}
