//! What a fault of an experiment may hit: an instance of the service (never one of its
//! supervisors), allowed by the file's `allow` list and not on its `deny` list. The built-in
//! denylist is applied before (`target::denylist`): the candidates an engine sees have passed
//! it already.

use std::path::Path;

use super::Experiment;
use crate::fault::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitRules {
    /// The service's command name.
    pub comm: String,
    pub supervisors: Vec<u32>,
    pub deny_pids: Vec<u32>,
    pub deny_comms: Vec<String>,
    pub deny_exes: Vec<std::path::PathBuf>,
    pub allow: Option<(Vec<String>, Vec<std::path::PathBuf>)>,
}

impl HitRules {
    pub fn new(experiment: &Experiment, comm: &str, supervisors: &[u32]) -> Self {
        let t = &experiment.target;
        Self {
            comm: comm.into(),
            supervisors: supervisors.to_vec(),
            deny_pids: t.deny.pids.clone(),
            deny_comms: t.deny.comms.clone(),
            deny_exes: t.deny.exes.clone(),
            allow: t.allow.as_ref().map(|a| (a.comms.clone(), a.exes.clone())),
        }
    }

    /// Ok when a fault may hit this process, of this role in the service; else why not. A
    /// main process must have the service's name; a worker may have any (a helper the
    /// service runs).
    pub fn check(
        &self,
        pid: u32,
        comm: &str,
        exe: Option<&Path>,
        role: Role,
    ) -> Result<(), String> {
        if self.supervisors.contains(&pid) {
            return Err("a supervisor of the service".into());
        }
        if role == Role::Main && comm != self.comm {
            return Err(format!("not the service ({})", self.comm));
        }
        let exe_in = |list: &[std::path::PathBuf]| exe.is_some_and(|e| list.iter().any(|l| l == e));
        if self.deny_pids.contains(&pid)
            || self.deny_comms.iter().any(|c| c == comm)
            || exe_in(&self.deny_exes)
        {
            return Err("on the experiment's deny list".into());
        }
        if let Some((comms, exes)) = &self.allow
            && !(comms.iter().any(|c| c == comm) || exe_in(exes))
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
            deny_comms: Vec::new(),
            deny_exes: vec!["/usr/bin/bad".into()],
            allow: None,
        }
    }

    #[test]
    fn only_allowed_instances_of_the_service_may_be_hit() {
        let r = rules();
        assert_eq!(r.check(11, "queue", None, Role::Main), Ok(()));
        assert_eq!(
            r.check(12, "helper", None, Role::Worker),
            Ok(()),
            "a worker of any name"
        );
        assert_eq!(
            r.check(10, "queue", None, Role::Main).unwrap_err(),
            "a supervisor of the service"
        );
        assert_eq!(
            r.check(12, "other", None, Role::Main).unwrap_err(),
            "not the service (queue)"
        );
        assert_eq!(
            r.check(13, "queue", None, Role::Main).unwrap_err(),
            "on the experiment's deny list"
        );
        assert!(
            r.check(14, "queue", Some(Path::new("/usr/bin/bad")), Role::Main)
                .is_err()
        );
        let only = HitRules {
            allow: Some((vec!["postgres".into()], Vec::new())),
            ..rules()
        };
        assert_eq!(
            only.check(11, "queue", None, Role::Main).unwrap_err(),
            "not on the experiment's allow list"
        );
    }
}
