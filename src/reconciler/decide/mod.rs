//! The pure decision: from an observed snapshot to the writes to make, the status to report and
//! the events to publish. No API access, so every scenario is unit-testable; the caller executes
//! the actions in order and derives nothing else.
//!
//! Because the decision depends only on observed state, a crash between any two actions is
//! harmless: the next reconcile observes what was done and decides the rest.
//!
//! `decide` dispatches: another KataConfig is active (`duplicate`); ours is being deleted (the
//! backend's `uninstall.rs`); its spec cannot be acted on (`invalid`); otherwise the backend's
//! `install.rs` (which also updates and repairs). The backend is [`backend_for`]: the Machine
//! Config Operator's where its API is served (`machine_config/`), the node installer's elsewhere
//! (`node_installer/`); `steps.rs` holds what both do alike. Every branch ends in
//! `report::finish`, with a [`Report`] of the status it wants.

mod machine_config;
mod node_installer;
mod report;
mod steps;

use kube::ResourceExt;

use crate::api::{Backend, KataConfig};
use crate::discovery::ServedApis;
use crate::plan::{self, SpecError};

use super::action::{Action, Decision, Outcome};
use super::observe::Observed;
use super::status::{self, DEGRADED, IN_PROGRESS, READY, Wanted, reason};

pub use report::Report;
use report::{finish, namespace_policy_condition};

/// The decision for one KataConfig.
pub fn decide(obs: &Observed) -> Decision {
    let kc = &obs.kata_config;
    if obs.active.as_deref() != Some(kc.name_any().as_str()) {
        return duplicate(obs, kc.is_being_deleted());
    }
    let backend = backend_for(kc, &obs.served);
    if kc.is_being_deleted() {
        return match (kc.has_finalizer(), backend) {
            (false, _) => finish(obs, Outcome::Gone, Vec::new(), None, Vec::new()),
            (true, Backend::MachineConfig) => machine_config::decide_uninstall(obs),
            (true, Backend::NodeInstaller) => node_installer::decide_uninstall(obs),
        };
    }
    let planned = match backend {
        Backend::MachineConfig => {
            plan::desired_state(kc, &obs.nodes).map(|d| machine_config::decide_install(obs, d))
        }
        Backend::NodeInstaller => {
            plan::node_installer::desired_state(kc, &obs.nodes, &obs.operator_namespace)
                .map(|d| node_installer::decide_install(obs, d))
        }
    };
    planned.unwrap_or_else(|e| invalid(obs, &e, backend))
}

/// How kata is (to be) installed: through the Machine Config Operator where its API is served,
/// through the node installer elsewhere. An uninstall follows the backend recorded in the
/// status, so it cleans up what was installed even if discovery changed meanwhile.
pub fn backend_for(kc: &KataConfig, served: &ServedApis) -> Backend {
    let discovered = Backend::for_cluster(served.machine_config);
    let recorded = kc.status.as_ref().and_then(|s| s.backend);
    if kc.is_being_deleted() {
        recorded.unwrap_or(discovered)
    } else {
        discovered
    }
}

fn duplicate(obs: &Observed, deleting: bool) -> Decision {
    let kc = &obs.kata_config;
    if deleting {
        // We never acted for it; never keep it from going away.
        let actions = if kc.has_finalizer() {
            vec![Action::RemoveFinalizer]
        } else {
            Vec::new()
        };
        return finish(obs, Outcome::Duplicate, actions, None, Vec::new());
    }
    let active = obs.active.clone().unwrap_or_default();
    let msg = format!(
        "only one KataConfig is allowed per cluster: {active:?} is the active one, so this one is ignored; delete it (or edit {active:?} instead)"
    );
    let wanted = vec![
        Wanted::new(IN_PROGRESS, false, reason::DUPLICATE, msg.clone()),
        Wanted::new(READY, false, reason::DUPLICATE, msg),
        Wanted::new(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "this KataConfig is not acted on",
        ),
    ];
    let report = Report {
        backend: None,
        runtime_classes: Vec::new(),
        kata_nodes: Default::default(),
        conditions: wanted,
    };
    finish(
        obs,
        Outcome::Duplicate,
        Vec::new(),
        Some(report),
        Vec::new(),
    )
}

fn invalid(obs: &Observed, e: &SpecError, backend: Backend) -> Decision {
    let old = obs.kata_config.status.clone().unwrap_or_default();
    let msg = format!("the spec cannot be acted on, fix it and the install resumes: {e}");
    let mut wanted = vec![
        Wanted::new(IN_PROGRESS, false, reason::INVALID_SPEC, msg.clone()),
        Wanted::new(READY, false, reason::INVALID_SPEC, msg),
    ];
    if status::find(&old.conditions, DEGRADED).is_none() {
        wanted.push(Wanted::new(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no kata node is degraded",
        ));
    }
    // The webhooks and the policy still apply the KataConfig's namespace policy.
    wanted.extend(namespace_policy_condition(obs));
    // Nothing is changed in the cluster: what is installed stays as it is until the spec is fixed.
    let report = Report {
        backend: Some(backend),
        runtime_classes: old.runtime_classes,
        kata_nodes: old.kata_nodes,
        conditions: wanted,
    };
    finish(
        obs,
        Outcome::InvalidSpec,
        Vec::new(),
        Some(report),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::FINALIZER;
    use crate::reconciler::fixtures::{cond, kc, now, observed, three_workers};
    use serde_json::json;

    #[test]
    fn invalid_spec_is_a_condition_and_touches_nothing() {
        let mut obs = observed(
            kc(
                json!({"kataConfigPoolSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]}}),
            ),
            three_workers(),
        );
        obs.kata_config.spec.log_level = "loud".into();
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::InvalidSpec);
        assert!(d.actions.is_empty());
        let msg = &cond(&d, READY).message;
        assert!(msg.contains("spec.logLevel"), "{msg}");
        assert!(msg.contains("fix it and the install resumes"), "{msg}");
        assert_eq!(cond(&d, IN_PROGRESS).reason, reason::INVALID_SPEC);
        assert!(
            d.events
                .iter()
                .any(|e| e.reason == reason::INVALID_SPEC && e.warning)
        );
    }

    #[test]
    fn whether_the_namespace_policy_holds_without_the_operator_follows_discovery() {
        use crate::reconciler::status::NAMESPACE_POLICY_IN_API_SERVER as GATE;
        let mut obs = observed(kc(json!({})), three_workers());
        let d = decide(&obs);
        let c = cond(&d, GATE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reason::POLICY_SERVED)
        );
        assert!(
            c.message
                .contains("sandboxed-containers-operator-namespace-policy"),
            "{}",
            c.message
        );

        obs.served.validating_admission_policy = false;
        let d = decide(&obs);
        let c = cond(&d, GATE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reason::POLICY_NOT_SERVED)
        );
        assert!(
            c.message.contains(
                "does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy"
            ) && c.message.contains(
                "while the operator is down pods in the namespaces they intercept are refused"
            ),
            "{}",
            c.message
        );
        // An invalid spec still reports it (the webhooks still enforce the namespace policy).
        let mut invalid = obs.clone();
        invalid.kata_config.spec.log_level = "loud".into();
        assert_eq!(
            cond(&decide(&invalid), GATE).reason,
            reason::POLICY_NOT_SERVED
        );
    }

    #[test]
    fn a_second_kata_config_is_told_which_one_is_active_and_nothing_else() {
        let mut obs = observed(kc(json!({})), three_workers());
        obs.active = Some("first".into());
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Duplicate);
        assert!(d.actions.is_empty(), "no finalizer, no objects");
        let msg = &cond(&d, READY).message;
        assert!(msg.contains("\"first\" is the active one"), "{msg}");
        assert_eq!(cond(&d, IN_PROGRESS).reason, reason::DUPLICATE);
        // Deleting a duplicate that somehow carries our finalizer only drops it.
        obs.kata_config.metadata.deletion_timestamp = Some(now());
        obs.kata_config.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let d = decide(&obs);
        assert_eq!(d.actions, [Action::RemoveFinalizer]);
    }
}
