//! Kubernetes Events, published only on state transitions, with stable PascalCase reasons.
//!
//! Which events to publish is decided purely from the old and new conditions, so it is tested
//! without an API server; `publish` is the thin I/O part.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::api::KataConfig;
use crate::kubeapi::WriteFence;

use super::status::{self, reason};

pub const UNINSTALLED: &str = "Uninstalled";
pub const DRIFT_REPAIRED: &str = "DriftRepaired";
pub const NODE_RECOVERED: &str = "NodeRecovered";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl EventSpec {
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        EventSpec {
            warning: false,
            reason,
            note: note.into(),
        }
    }

    pub fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        EventSpec {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}

fn key(c: Option<&Condition>) -> Option<(&str, &str)> {
    c.map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Events for the condition transitions between `old` and `new`: `InProgress` reason changes
/// (Installing, Uninstalling, BlockedByExistingKataPods, InvalidSpec, DuplicateKataConfig),
/// `Ready` becoming True (Installed), `Degraded` becoming True or naming other nodes
/// (NodeDegraded) and becoming False again (NodeRecovered).
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<EventSpec> {
    let mut out = Vec::new();
    let (o, n) = (
        status::find(old, status::IN_PROGRESS),
        status::find(new, status::IN_PROGRESS),
    );
    if let Some(nc) = n
        && key(o) != key(n)
    {
        let r = match nc.reason.as_str() {
            reason::INSTALLING => Some((false, reason::INSTALLING)),
            reason::UNINSTALLING => Some((false, reason::UNINSTALLING)),
            reason::BLOCKED => Some((true, reason::BLOCKED)),
            reason::INVALID_SPEC => Some((true, reason::INVALID_SPEC)),
            reason::DUPLICATE => Some((true, reason::DUPLICATE)),
            reason::NO_KATA_NODES => Some((true, reason::NO_KATA_NODES)),
            // Installed is announced by the Ready transition below.
            _ => None,
        };
        if let Some((warning, reason)) = r {
            out.push(EventSpec {
                warning,
                reason,
                note: nc.message.clone(),
            });
        }
    }
    let (o, n) = (
        status::find(old, status::READY),
        status::find(new, status::READY),
    );
    if let Some(nc) = n
        && nc.status == "True"
        && o.is_none_or(|oc| oc.status != "True")
    {
        out.push(EventSpec::normal(reason::INSTALLED, nc.message.clone()));
    }
    let (o, n) = (
        status::find(old, status::DEGRADED),
        status::find(new, status::DEGRADED),
    );
    if let Some(nc) = n {
        let was = o.is_some_and(|oc| oc.status == "True");
        if nc.status == "True" && (!was || o.is_some_and(|oc| oc.message != nc.message)) {
            out.push(EventSpec::warning(
                reason::NODE_DEGRADED,
                nc.message.clone(),
            ));
        } else if nc.status != "True" && was {
            out.push(EventSpec::normal(
                NODE_RECOVERED,
                "no kata node is degraded any more",
            ));
        }
    }
    out
}

/// Publishes the events on the KataConfig, each bounded by `timeout` and by the leadership
/// term (`fence`: nothing is published once it has ended). Failures are logged, never fatal: an
/// Event is a notification, and the status already carries the same information. `progress`
/// runs after each event (the reconciler's heartbeat).
pub async fn publish(
    recorder: &Recorder,
    kc: &KataConfig,
    events: &[EventSpec],
    fence: &WriteFence,
    timeout: Duration,
    progress: impl Fn(),
) {
    if events.is_empty() {
        return;
    }
    let reference = kc.object_ref(&());
    for e in events {
        let ev = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_string(),
            // Events API limit: note at most 1 kB.
            note: Some(truncate(&e.note, 1000)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        let bound = match fence.bound(timeout) {
            Ok(bound) => bound,
            Err(closed) => {
                tracing::debug!(reason = e.reason, error = %closed, "event not published");
                return;
            }
        };
        match tokio::time::timeout(bound, recorder.publish(&ev, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(reason = e.reason, error = %err, "could not publish event")
            }
            Err(_) => tracing::warn!(
                reason = e.reason,
                "could not publish event: no answer from the API server within {}s",
                bound.as_secs_f64()
            ),
        }
        progress();
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::status::{DEGRADED, IN_PROGRESS, READY, Wanted, merge};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn conds(w: &[Wanted]) -> Vec<Condition> {
        merge(
            &[],
            w,
            Some(1),
            &Time("2026-01-01T00:00:00Z".parse().expect("ts")),
        )
    }

    fn installing(msg: &str) -> Vec<Condition> {
        conds(&[
            Wanted::new(IN_PROGRESS, true, reason::INSTALLING, msg),
            Wanted::new(READY, false, reason::INSTALLING, msg),
            Wanted::new(DEGRADED, false, reason::AS_EXPECTED, ""),
        ])
    }

    #[test]
    fn first_reconcile_announces_install_start() {
        let ev = transitions(&[], &installing("0 of 3"));
        assert_eq!(ev, [EventSpec::normal(reason::INSTALLING, "0 of 3")]);
    }

    #[test]
    fn progress_messages_alone_publish_nothing() {
        assert!(transitions(&installing("0 of 3"), &installing("1 of 3")).is_empty());
    }

    #[test]
    fn completion_degradation_and_recovery_are_announced_once() {
        let done = conds(&[
            Wanted::new(IN_PROGRESS, false, reason::INSTALLED, "done"),
            Wanted::new(READY, true, reason::INSTALLED, "done"),
            Wanted::new(DEGRADED, false, reason::AS_EXPECTED, ""),
        ]);
        assert_eq!(
            transitions(&installing("2 of 3"), &done),
            [EventSpec::normal(reason::INSTALLED, "done")]
        );
        assert!(transitions(&done, &done).is_empty());
        let degraded = conds(&[
            Wanted::new(IN_PROGRESS, true, reason::INSTALLING, "x"),
            Wanted::new(READY, false, reason::NODE_DEGRADED, "x"),
            Wanted::new(
                DEGRADED,
                true,
                reason::NODE_DEGRADED,
                "Node w1 Degraded: disk",
            ),
        ]);
        let ev = transitions(&done, &degraded);
        assert!(ev.contains(&EventSpec::warning(
            reason::NODE_DEGRADED,
            "Node w1 Degraded: disk"
        )));
        assert!(transitions(&degraded, &degraded).is_empty());
        let ev = transitions(&degraded, &done);
        assert!(ev.iter().any(|e| e.reason == NODE_RECOVERED && !e.warning));
    }

    #[test]
    fn blocked_uninstall_is_a_warning() {
        let blocked = conds(&[Wanted::new(
            IN_PROGRESS,
            false,
            reason::BLOCKED,
            "waiting for pods: ns/a",
        )]);
        let ev = transitions(&installing("x"), &blocked);
        assert_eq!(
            ev,
            [EventSpec::warning(
                reason::BLOCKED,
                "waiting for pods: ns/a"
            )]
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1003);
        assert!(t.ends_with('…'));
    }
}
