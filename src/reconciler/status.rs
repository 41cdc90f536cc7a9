//! Status conditions: `InProgress` (as upstream), `Ready`, `Degraded` and
//! `NamespacePolicyInAPIServer`, each with
//! `observedGeneration` and a `lastTransitionTime` that only moves when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const IN_PROGRESS: &str = "InProgress";
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
/// Whether the namespace policy is also enforced inside the API server (ValidatingAdmissionPolicy
/// v1 served), so it holds while the operator is down.
pub const NAMESPACE_POLICY_IN_API_SERVER: &str = "NamespacePolicyInAPIServer";

/// Stable PascalCase reasons (also used as Event reasons).
pub mod reason {
    pub const INSTALLING: &str = "Installing";
    pub const INSTALLED: &str = "Installed";
    pub const NO_KATA_NODES: &str = "NoKataNodes";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const DUPLICATE: &str = "DuplicateKataConfig";
    pub const UNINSTALLING: &str = "Uninstalling";
    pub const BLOCKED: &str = "BlockedByExistingKataPods";
    pub const NODE_DEGRADED: &str = "NodeDegraded";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const POLICY_SERVED: &str = "ValidatingAdmissionPolicy";
    pub const POLICY_NOT_SERVED: &str = "ValidatingAdmissionPolicyNotServed";
}

/// A condition as the decision wants it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Wanted {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Wanted {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Builds the new condition list: conditions whose status did not change keep their
/// `lastTransitionTime`, so re-reconciling a settled object produces an identical status.
/// Conditions of other types (set by someone else) are kept as they are.
pub fn merge(
    old: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = wanted
        .iter()
        .map(|w| {
            let status = status_str(w.status);
            let since = old
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: w.type_.to_string(),
                status: status.to_string(),
                reason: w.reason.to_string(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    for c in old {
        if !wanted.iter().any(|w| w.type_ == c.type_) {
            out.push(c.clone());
        }
    }
    out
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Joins names for a message, listing at most `limit` and counting the rest.
pub fn name_list(names: &[String], limit: usize) -> String {
    if names.len() <= limit {
        names.join(", ")
    } else {
        format!(
            "{} and {} more",
            names[..limit].join(", "),
            names.len() - limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn unchanged_status_keeps_transition_time_and_changed_status_moves_it() {
        let first = merge(
            &[],
            &[
                Wanted::new(READY, false, reason::INSTALLING, "1 of 3"),
                Wanted::new(DEGRADED, false, reason::AS_EXPECTED, ""),
            ],
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        // Message changes, status does not: time stays.
        let second = merge(
            &first,
            &[
                Wanted::new(READY, false, reason::INSTALLING, "2 of 3"),
                Wanted::new(DEGRADED, true, reason::NODE_DEGRADED, "Node w1 Degraded: x"),
            ],
            Some(1),
            &t("2026-01-01T00:05:00Z"),
        );
        let ready = find(&second, READY).expect("ready");
        assert_eq!(ready.last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(ready.message, "2 of 3");
        let degraded = find(&second, DEGRADED).expect("degraded");
        assert_eq!(degraded.last_transition_time, t("2026-01-01T00:05:00Z"));
        assert_eq!(degraded.observed_generation, Some(1));
        assert!(is_true(&second, DEGRADED));
    }

    #[test]
    fn identical_input_gives_identical_output() {
        let w = [Wanted::new(IN_PROGRESS, false, reason::INSTALLED, "done")];
        let a = merge(&[], &w, Some(2), &t("2026-01-01T00:00:00Z"));
        let b = merge(&a, &w, Some(2), &t("2026-01-02T00:00:00Z"));
        assert_eq!(a, b);
    }

    #[test]
    fn foreign_conditions_are_preserved() {
        let old = merge(
            &[],
            &[Wanted::new("Upgradeable", true, "AsExpected", "")],
            None,
            &t("2026-01-01T00:00:00Z"),
        );
        let new = merge(
            &old,
            &[Wanted::new(READY, true, reason::INSTALLED, "")],
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        assert!(find(&new, "Upgradeable").is_some());
    }

    #[test]
    fn long_name_lists_are_cut() {
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        assert_eq!(name_list(&names, 10), "n0, n1, n2, n3, n4");
        assert_eq!(name_list(&names, 2), "n0, n1 and 3 more");
    }
}
