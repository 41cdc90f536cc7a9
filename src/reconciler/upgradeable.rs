//! What the operator tells OLM about upgrading it now (`Upgradeable` on its OperatorCondition):
//! derived purely from each decision of the active KataConfig, written by the reconciler (so only
//! by the leader) and only when the derived value changes.
//!
//! Upgrading the operator while the Machine Config Operator rolls kata through nodes (install,
//! a selector or log-level update, uninstall) replaces the process that sequences the rollout in
//! the middle of it; OLM waits while `Upgradeable` is False.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::KataNodesStatus;
use crate::api::operator_condition::{
    OperatorCondition, Upgradeable, operator_condition_patch, with_upgradeable,
};
use crate::kubeapi::{self, CallError};
use crate::plan::Topology;

use super::action::{Decision, Outcome};
use super::observe::Observed;
use super::status::{self, IN_PROGRESS};

pub const REASON_ROLLOUT: &str = "KataRolloutInProgress";
pub const REASON_UNINSTALL: &str = "KataUninstallInProgress";
pub const REASON_SETTLED: &str = "KataSettled";

/// Which OperatorCondition to write (OLM's `OPERATOR_CONDITION_NAME`, the operator namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConditionRef {
    pub namespace: String,
    pub name: String,
}

/// `Upgradeable` for this decision; `None` when it has no say (another KataConfig is active, or
/// this one goes away without our finalizer).
pub fn derive(d: &Decision, obs: &Observed) -> Option<Upgradeable> {
    let name = obs.kata_config.name_any();
    let settled = |message: String| {
        Some(Upgradeable {
            upgradeable: true,
            reason: REASON_SETTLED,
            message,
        })
    };
    match d.outcome {
        Outcome::Duplicate | Outcome::Gone => return None,
        Outcome::Uninstalled => {
            return settled(format!(
                "KataConfig {name} is uninstalled; no node is changing"
            ));
        }
        _ => {}
    }
    let reported = d.reported.as_ref()?;
    let rolling =
        status::find(&reported.conditions, IN_PROGRESS).is_some_and(|c| c.status == "True");
    if !rolling {
        return settled(format!(
            "no kata rollout is in progress (KataConfig {name})"
        ));
    }
    let uninstalling = d.outcome == Outcome::Uninstalling;
    let pool = Topology::detect(&obs.nodes).pool_name();
    let verb = if uninstalling {
        "removing"
    } else {
        "rolling out"
    };
    Some(Upgradeable {
        upgradeable: false,
        reason: if uninstalling {
            REASON_UNINSTALL
        } else {
            REASON_ROLLOUT
        },
        message: format!(
            "KataConfig {name}: MachineConfigPool {pool} is {verb} kata on nodes ({}); upgrading the operator in the middle of a node rollout is unsafe, it becomes upgradeable once the rollout settles",
            nodes_in_flight(&reported.kata_nodes)
        ),
    })
}

/// The nodes still changing, by list, or what the rollout waits for before any node moves.
fn nodes_in_flight(n: &KataNodesStatus) -> String {
    let lists: [(&str, &Vec<String>); 6] = [
        ("installing", &n.installing),
        ("waiting to install", &n.waiting_to_install),
        ("failed to install", &n.failed_to_install),
        ("uninstalling", &n.uninstalling),
        ("waiting to uninstall", &n.waiting_to_uninstall),
        ("failed to uninstall", &n.failed_to_uninstall),
    ];
    let parts: Vec<String> = lists
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(label, list)| format!("{label}: {}", status::name_list(list, 10)))
        .collect();
    if parts.is_empty() {
        "no node has started yet; waiting for the Machine Config Operator".to_string()
    } else {
        parts.join("; ")
    }
}

/// Sets `Upgradeable` on the OperatorCondition: reads it, and merge-patches `spec.conditions`
/// (guarded by the resourceVersion read) only if the condition differs. True when it patched.
/// `get` and `patch` on that one object is exactly what OLM's Role for it grants.
pub async fn write(
    client: &Client,
    target: &OperatorConditionRef,
    want: &Upgradeable,
    now: &Time,
    timeout: Duration,
) -> Result<bool, CallError> {
    let api: Api<OperatorCondition> = Api::namespaced(client.clone(), &target.namespace);
    let current = kubeapi::bounded(timeout, api.get(&target.name)).await?;
    let Some(conditions) = with_upgradeable(
        &current.spec.conditions,
        want,
        current.metadata.generation,
        now,
    ) else {
        return Ok(false);
    };
    let patch = operator_condition_patch(
        &conditions,
        current
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default(),
    );
    kubeapi::bounded(
        timeout,
        api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::decide::decide;
    use crate::reconciler::fixtures::*;

    #[test]
    fn an_install_is_not_upgradeable_until_every_node_runs_kata() {
        let mut obs = observed(kc(serde_json::json!({})), three_workers());
        let first = decide(&obs);
        let up = derive(&first, &obs).expect("active KataConfig has a say");
        assert!(!up.upgradeable);
        assert_eq!(up.reason, REASON_ROLLOUT);
        assert!(
            up.message.contains("MachineConfigPool kata-oc"),
            "{}",
            up.message
        );
        converge(&mut obs);
        let settled = decide(&obs);
        let up = derive(&settled, &obs).expect("say");
        assert!(up.upgradeable, "{up:?}");
        assert_eq!(up.reason, REASON_SETTLED);
    }

    #[test]
    fn the_message_names_the_nodes_in_flight() {
        let n = KataNodesStatus {
            installing: vec!["w0".into()],
            waiting_to_install: vec!["w1".into(), "w2".into()],
            ..Default::default()
        };
        assert_eq!(
            nodes_in_flight(&n),
            "installing: w0; waiting to install: w1, w2"
        );
        assert!(nodes_in_flight(&KataNodesStatus::default()).contains("no node has started"));
    }

    #[test]
    fn a_duplicate_kataconfig_has_no_say() {
        let mut obs = observed(kc(serde_json::json!({})), three_workers());
        obs.active = Some("another".into());
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Duplicate);
        assert_eq!(derive(&d, &obs), None);
    }

    #[test]
    fn reasons_are_what_the_condition_schema_accepts() {
        let ok = |r: &str| {
            let b = r.as_bytes();
            b.first().is_some_and(u8::is_ascii_alphabetic)
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"_,:".contains(c))
                && b.last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        };
        for r in [REASON_ROLLOUT, REASON_UNINSTALL, REASON_SETTLED] {
            assert!(ok(r), "{r}");
        }
    }
}
