//! Typed model of OLM's `OperatorCondition` (`operators.coreos.com/v2`, namespaced), written from
//! its published schema and semantics (operator-framework/api, operator-lifecycle-manager):
//!
//! - OLM creates one per installed CSV, named like the CSV, in the operator's namespace, owned by
//!   the CSV, and puts its name into the operator Deployment's environment as
//!   `OPERATOR_CONDITION_NAME`. It also creates a Role granting `get`/`update`/`patch` on exactly
//!   that object to the CSV's ServiceAccounts, and nothing more.
//! - `spec.conditions` is where the operator speaks; `spec.overrides` is the administrator's
//!   (an override of the same type wins); OLM copies `spec.conditions` into `status.conditions`.
//! - `Upgradeable=False` makes OLM hold back an InstallPlan that would replace this CSV until it
//!   turns True (or an administrator overrides it). A missing condition counts as upgradeable.
//!
//! Only what the operator reads is modelled; writes are merge patches of `spec.conditions` alone
//! (`operator_condition_patch`), so fields this model lacks are never dropped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The condition type OLM reads before an upgrade.
pub const UPGRADEABLE: &str = "Upgradeable";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "operators.coreos.com",
    version = "v2",
    kind = "OperatorCondition",
    plural = "operatorconditions",
    namespaced,
    status = "OperatorConditionStatus",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct OperatorConditionSpec {
    /// ServiceAccounts OLM grants access to this object (set by OLM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Deployments OLM puts `OPERATOR_CONDITION_NAME` into (set by OLM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<String>,
    /// The administrator's overrides; they win over `conditions` of the same type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Condition>,
    /// The operator's conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct OperatorConditionStatus {
    /// OLM's copy of `spec.conditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What the operator says about upgrading it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgradeable {
    pub upgradeable: bool,
    /// CamelCase, as the condition schema requires (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`):
    /// object names (with `-` and `.`) go into `message`.
    pub reason: &'static str,
    pub message: String,
}

impl Upgradeable {
    fn status(&self) -> &'static str {
        if self.upgradeable { "True" } else { "False" }
    }
}

/// `conditions` with `Upgradeable` set to `want`, or `None` when it already says exactly that.
/// Other conditions are kept; `lastTransitionTime` moves only when the status flips.
pub fn with_upgradeable(
    conditions: &[Condition],
    want: &Upgradeable,
    generation: Option<i64>,
    now: &Time,
) -> Option<Vec<Condition>> {
    let old = conditions.iter().find(|c| c.type_ == UPGRADEABLE);
    if old.is_some_and(|c| {
        c.status == want.status() && c.reason == want.reason && c.message == want.message
    }) {
        return None;
    }
    let transition = match old {
        Some(c) if c.status == want.status() => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let new = Condition {
        type_: UPGRADEABLE.to_string(),
        status: want.status().to_string(),
        reason: want.reason.to_string(),
        message: want.message.clone(),
        last_transition_time: transition,
        observed_generation: generation,
    };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != UPGRADEABLE)
        .cloned()
        .collect();
    out.push(new);
    Some(out)
}

/// The merge patch replacing `spec.conditions`, guarded by `resourceVersion` so a concurrent
/// change of the list (someone else's condition) is a 409 and is re-read, never overwritten.
pub fn operator_condition_patch(conditions: &[Condition], resource_version: &str) -> Value {
    json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"conditions": conditions},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    fn blocked(message: &str) -> Upgradeable {
        Upgradeable {
            upgradeable: false,
            reason: "KataRolloutInProgress",
            message: message.to_string(),
        }
    }

    fn other() -> Condition {
        Condition {
            type_: "Custom".into(),
            status: "True".into(),
            reason: "Mine".into(),
            message: String::new(),
            last_transition_time: time("2026-01-01T00:00:00Z"),
            observed_generation: None,
        }
    }

    #[test]
    fn sets_upgradeable_keeping_other_conditions() {
        let now = time("2026-02-01T00:00:00Z");
        let out = with_upgradeable(&[other()], &blocked("rolling"), Some(1), &now).expect("set");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], other());
        assert_eq!(out[1].type_, "Upgradeable");
        assert_eq!(out[1].status, "False");
        assert_eq!(out[1].reason, "KataRolloutInProgress");
        assert_eq!(out[1].last_transition_time, now);
        assert_eq!(out[1].observed_generation, Some(1));
    }

    #[test]
    fn unchanged_condition_is_not_rewritten() {
        let now = time("2026-02-01T00:00:00Z");
        let set = with_upgradeable(&[], &blocked("rolling"), None, &now).expect("set");
        let later = time("2026-03-01T00:00:00Z");
        assert_eq!(
            with_upgradeable(&set, &blocked("rolling"), None, &later),
            None
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t1 = time("2026-02-01T00:00:00Z");
        let t2 = time("2026-02-02T00:00:00Z");
        let t3 = time("2026-02-03T00:00:00Z");
        let first = with_upgradeable(&[], &blocked("worker-0"), None, &t1).expect("set");
        let progressed =
            with_upgradeable(&first, &blocked("worker-1"), None, &t2).expect("new message");
        assert_eq!(progressed[0].message, "worker-1");
        assert_eq!(progressed[0].last_transition_time, t1);
        let settled = Upgradeable {
            upgradeable: true,
            reason: "KataSettled",
            message: "settled".into(),
        };
        let done = with_upgradeable(&progressed, &settled, None, &t3).expect("flip");
        assert_eq!(done[0].status, "True");
        assert_eq!(done[0].last_transition_time, t3);
    }

    #[test]
    fn patch_replaces_only_the_conditions_under_the_read_resource_version() {
        let patch = operator_condition_patch(&[other()], "42");
        assert_eq!(patch["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(patch["spec"].as_object().map(|o| o.len()), Some(1));
        assert_eq!(patch["spec"]["conditions"][0]["type"], "Custom");
    }

    #[test]
    fn reads_olm_objects_with_fields_it_does_not_model() {
        let oc: OperatorCondition = serde_json::from_value(json!({
            "apiVersion": "operators.coreos.com/v2", "kind": "OperatorCondition",
            "metadata": {"name": "op.v1", "namespace": "ns"},
            "spec": {"deployments": ["op"], "serviceAccounts": ["op"], "futureField": 1},
            "status": {"conditions": []},
        }))
        .expect("deserializes");
        assert_eq!(oc.spec.deployments, ["op"]);
        assert!(oc.spec.conditions.is_empty());
    }
}
