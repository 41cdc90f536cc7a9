//! What a decision reports: the status it wants ([`Report`]), how that becomes the decision's
//! status and Events ([`finish`]), and the Degraded condition every branch reports.

use crate::api::{Backend, KataConfigStatus, KataNodesStatus};
use crate::names::NAMESPACE_POLICY;
use crate::plan::progress::Progress;
use crate::reconciler::action::{Action, Decision, Outcome};
use crate::reconciler::events::{self, EventSpec};

use crate::reconciler::observe::Observed;
use crate::reconciler::status::{self, DEGRADED, NAMESPACE_POLICY_IN_API_SERVER, Wanted, reason};

/// The status a decision wants, before timestamps and the "unchanged → no write" rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `status.backend`.
    pub backend: Option<Backend>,
    /// `status.runtimeClasses`.
    pub runtime_classes: Vec<String>,
    /// `status.kataNodes`.
    pub kata_nodes: KataNodesStatus,
    /// The conditions it sets (others' conditions are kept).
    pub conditions: Vec<Wanted>,
}

/// Status, events and the "unchanged → no write" rule, shared by every branch. Without a
/// report the status is left as it is (the object is going away).
pub(super) fn finish(
    obs: &Observed,
    outcome: Outcome,
    actions: Vec<Action>,
    report: Option<Report>,
    mut extra_events: Vec<EventSpec>,
) -> Decision {
    let kc = &obs.kata_config;
    let old = kc.status.clone().unwrap_or_default();
    let Some(report) = report else {
        return Decision {
            outcome,
            actions,
            status: None,
            reported: None,
            events: extra_events,
        };
    };
    let conditions = status::merge(
        &old.conditions,
        &report.conditions,
        kc.metadata.generation,
        &obs.now,
    );
    let mut events = events::transitions(&old.conditions, &conditions);
    events.append(&mut extra_events);
    let status = KataConfigStatus {
        backend: report.backend,
        runtime_classes: report.runtime_classes,
        kata_nodes: report.kata_nodes,
        conditions,
    };
    Decision {
        outcome,
        actions,
        status: (status != old).then(|| status.clone()),
        reported: Some(status),
        events,
    }
}

/// Whether the namespace policy holds while the operator is down, from what discovery found.
pub(super) fn namespace_policy_condition(obs: &Observed) -> Option<Wanted> {
    Some(if obs.served.validating_admission_policy {
        Wanted::new(
            NAMESPACE_POLICY_IN_API_SERVER,
            true,
            reason::POLICY_SERVED,
            format!(
                "the namespace policy is enforced inside the API server by ValidatingAdmissionPolicy {NAMESPACE_POLICY}, so it holds while the operator is down; the pod webhooks fail open and only default pods to kata"
            ),
        )
    } else {
        Wanted::new(
            NAMESPACE_POLICY_IN_API_SERVER,
            false,
            reason::POLICY_NOT_SERVED,
            "the API server does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes 1.30+, OpenShift 4.17+), so the namespace policy is enforced by the operator's webhooks alone: they fail closed, and while the operator is down pods in the namespaces they intercept are refused; upgrade the cluster to enforce it inside the API server",
        )
    })
}

pub(super) fn degraded_condition(p: &Progress) -> Wanted {
    if p.degraded.is_empty() {
        Wanted::new(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no kata node is degraded",
        )
    } else {
        let parts: Vec<String> = p
            .degraded
            .iter()
            .map(|(node, why)| format!("Node {node} Degraded: {why}"))
            .collect();
        Wanted::new(DEGRADED, true, reason::NODE_DEGRADED, parts.join("; "))
    }
}
