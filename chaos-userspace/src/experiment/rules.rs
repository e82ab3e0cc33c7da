//! What a fault of an experiment may hit: an instance of the service (never one of its
//! supervisors), allowed by the file's `allow` list and not on its `deny` list. The built-in
//! denylist is applied before (`target::denylist`): the candidates an engine sees have passed
//! it already.

use std::path::{Path, PathBuf};

use super::{Experiment, file::MatchFile};
use crate::fault::Role;

/// A process as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub exe: Option<&'a Path>,
    /// Its title (command line), where it was read.
    pub title: Option<&'a str>,
}

/// Names a process matches: comms, executables, title patterns.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub comms: Vec<String>,
    pub exes: Vec<PathBuf>,
    pub titles: Vec<glob::Pattern>,
}

impl Names {
    fn of(m: &MatchFile) -> Self {
        Self {
            comms: m.comms.clone(),
            exes: m.exes.clone(),
            // Checked when the file was (`check`): a pattern that does not compile is refused.
            titles: m
                .titles
                .iter()
                .filter_map(|t| glob::Pattern::new(t).ok())
                .collect(),
        }
    }

    fn matches(&self, who: &Who) -> bool {
        self.comms.iter().any(|c| c == who.comm)
            || who.exe.is_some_and(|e| self.exes.iter().any(|l| l == e))
            || who
                .title
                .is_some_and(|t| self.titles.iter().any(|p| p.matches(t)))
    }

    pub fn uses_titles(&self) -> bool {
        !self.titles.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct HitRules {
    /// The service's command name.
    pub comm: String,
    pub supervisors: Vec<u32>,
    pub deny_pids: Vec<u32>,
    pub deny: Names,
    pub allow: Option<Names>,
}

impl HitRules {
    pub fn new(experiment: &Experiment, comm: &str, supervisors: &[u32]) -> Self {
        let t = &experiment.target;
        Self {
            comm: comm.into(),
            supervisors: supervisors.to_vec(),
            deny_pids: t.deny.pids.clone(),
            deny: Names::of(&t.deny),
            allow: t.allow.as_ref().map(Names::of),
        }
    }

    /// Whether a process's title must be read for [`HitRules::check`].
    pub fn needs_titles(&self) -> bool {
        self.deny.uses_titles() || self.allow.as_ref().is_some_and(Names::uses_titles)
    }

    /// Ok when a fault may hit this process, of this role in the service; else why not. A
    /// main process must have the service's name; a worker may have any (a helper the
    /// service runs).
    pub fn check(&self, who: &Who, role: Role) -> Result<(), String> {
        if self.supervisors.contains(&who.pid) {
            return Err("a supervisor of the service".into());
        }
        if role == Role::Main && who.comm != self.comm {
            return Err(format!("not the service ({})", self.comm));
        }
        if self.deny_pids.contains(&who.pid) || self.deny.matches(who) {
            return Err("on the experiment's deny list".into());
        }
        if let Some(allow) = &self.allow
            && !allow.matches(who)
        {
            return Err("not on the experiment's allow list".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HitRules {
        HitRules {
            comm: "queue".into(),
            supervisors: vec![10],
            deny_pids: vec![13],
            deny: Names {
                exes: vec!["/usr/bin/bad".into()],
                ..Names::default()
            },
            allow: None,
        }
    }

    fn who(pid: u32, comm: &str) -> Who<'_> {
        Who {
            pid,
            comm,
            exe: None,
            title: None,
        }
    }

    #[test]
    fn only_allowed_instances_of_the_service_may_be_hit() {
        let r = rules();
        assert_eq!(r.check(&who(11, "queue"), Role::Main), Ok(()));
        assert_eq!(
            r.check(&who(12, "helper"), Role::Worker),
            Ok(()),
            "a worker of any name"
        );
        assert_eq!(
            r.check(&who(10, "queue"), Role::Main).unwrap_err(),
            "a supervisor of the service"
        );
        assert_eq!(
            r.check(&who(12, "other"), Role::Main).unwrap_err(),
            "not the service (queue)"
        );
        assert_eq!(
            r.check(&who(13, "queue"), Role::Main).unwrap_err(),
            "on the experiment's deny list"
        );
        let bad = Who {
            exe: Some(Path::new("/usr/bin/bad")),
            ..who(14, "queue")
        };
        assert!(r.check(&bad, Role::Main).is_err());
        let only = HitRules {
            allow: Some(Names {
                comms: vec!["postgres".into()],
                ..Names::default()
            }),
            ..rules()
        };
        assert_eq!(
            only.check(&who(11, "queue"), Role::Main).unwrap_err(),
            "not on the experiment's allow list"
        );
    }

    #[test]
    fn titles_pick_among_workers_of_one_name() {
        let pattern = |p| glob::Pattern::new(p).unwrap();
        let backends = HitRules {
            comm: "postgres".into(),
            allow: Some(Names {
                titles: vec![pattern("postgres: * idle")],
                ..Names::default()
            }),
            deny: Names {
                titles: vec![pattern("*checkpointer*")],
                ..Names::default()
            },
            ..rules()
        };
        assert!(backends.needs_titles());
        let with = |title| Who {
            title: Some(title),
            ..who(20, "postgres")
        };
        assert_eq!(
            backends.check(
                &with("postgres: app shop 127.0.0.1(40112) idle"),
                Role::Worker
            ),
            Ok(())
        );
        assert_eq!(
            backends
                .check(&with("postgres: walwriter "), Role::Worker)
                .unwrap_err(),
            "not on the experiment's allow list"
        );
        assert_eq!(
            backends
                .check(&with("postgres: checkpointer idle"), Role::Worker)
                .unwrap_err(),
            "on the experiment's deny list"
        );
        assert!(
            backends.check(&who(20, "postgres"), Role::Worker).is_err(),
            "no title read: no match"
        );
        assert!(!rules().needs_titles());
    }
}
