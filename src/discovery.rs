//! What the API server serves, as far as the operator's choices depend on it: whether
//! ValidatingAdmissionPolicy v1 can hold the namespace gate, whether the Machine Config Operator's
//! API is there (OpenShift) or the node-installer backend must be used, and whether the
//! prometheus-operator's ServiceMonitor and PrometheusRule can be kept.
//!
//! Discovery is cheap (one `/apis` request plus one per relevant group version) and changes
//! rarely (a CRD installed later, an API server upgrade), so it is re-checked on an interval
//! rather than watched; readers get every change through [`Discovery::subscribe`].

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often discovery is re-checked by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

pub const ADMISSION_GROUP_VERSION: &str = "admissionregistration.k8s.io/v1";
pub const MCO_GROUP_VERSION: &str = "machineconfiguration.openshift.io/v1";
pub const MONITORING_GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// The APIs the operator's behaviour depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServedApis {
    /// `admissionregistration.k8s.io/v1` serves `validatingadmissionpolicies` and
    /// `validatingadmissionpolicybindings` (Kubernetes 1.30+, OpenShift 4.17+).
    pub validating_admission_policy: bool,
    /// `machineconfiguration.openshift.io/v1` serves `machineconfigs` and `machineconfigpools`.
    pub machine_config: bool,
    /// `monitoring.coreos.com/v1` serves `servicemonitors` and `prometheusrules`.
    pub monitoring: bool,
}

/// The group versions whose resource lists [`ServedApis::from_discovery`] reads, among those
/// `/apis` lists.
pub fn relevant_group_versions(groups: &APIGroupList) -> Vec<String> {
    [
        ADMISSION_GROUP_VERSION,
        MCO_GROUP_VERSION,
        MONITORING_GROUP_VERSION,
    ]
    .into_iter()
    .filter(|gv| {
        groups
            .groups
            .iter()
            .flat_map(|g| &g.versions)
            .any(|v| v.group_version == *gv)
    })
    .map(String::from)
    .collect()
}

impl ServedApis {
    /// Decided from the resource lists of the relevant group versions (pure).
    pub fn from_discovery(lists: &[APIResourceList]) -> ServedApis {
        let serves = |gv: &str, names: &[&str]| {
            lists.iter().any(|l| {
                l.group_version == gv
                    && names
                        .iter()
                        .all(|n| l.resources.iter().any(|r| r.name == *n))
            })
        };
        ServedApis {
            validating_admission_policy: serves(
                ADMISSION_GROUP_VERSION,
                &[
                    "validatingadmissionpolicies",
                    "validatingadmissionpolicybindings",
                ],
            ),
            machine_config: serves(MCO_GROUP_VERSION, &["machineconfigs", "machineconfigpools"]),
            monitoring: serves(
                MONITORING_GROUP_VERSION,
                &["servicemonitors", "prometheusrules"],
            ),
        }
    }
}

/// Asks the API server once.
pub async fn probe(client: &kube::Client) -> Result<ServedApis, kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut lists = Vec::new();
    for gv in relevant_group_versions(&groups) {
        match client.list_api_group_resources(&gv).await {
            Ok(list) => lists.push(list),
            // Listed in /apis but gone a moment later (a CRD being deleted): not served.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ServedApis::from_discovery(&lists))
}

/// The latest answer of a discovery loop. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    rx: watch::Receiver<Option<ServedApis>>,
}

impl Discovery {
    /// Probes now and then every `interval` until `shutdown`; each change is logged once.
    pub fn start(client: kube::Client, interval: Duration, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                match probe(&client).await {
                    Ok(served) => {
                        let previous = *tx.borrow();
                        if previous != Some(served) {
                            tracing::info!(
                                validating_admission_policy = served.validating_admission_policy,
                                machine_config = served.machine_config,
                                monitoring = served.monitoring,
                                "API discovery: served APIs changed"
                            );
                            tx.send_replace(Some(served));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "API discovery failed; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        });
        Discovery { rx }
    }

    /// A fixed answer (tests, and `render`, which plans offline).
    pub fn fixed(served: ServedApis) -> Self {
        let (tx, rx) = watch::channel(Some(served));
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Discovery { rx }
    }

    /// The latest answer; `None` until the first probe succeeded.
    pub fn current(&self) -> Option<ServedApis> {
        *self.rx.borrow()
    }

    /// Waits for the first answer (`None` if the loop ended before one).
    pub async fn ready(&self) -> Option<ServedApis> {
        let mut rx = self.rx.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|v| *v)
    }

    /// Every later change (and the current value).
    pub fn subscribe(&self) -> watch::Receiver<Option<ServedApis>> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        APIGroup, APIResource, GroupVersionForDiscovery,
    };

    fn list(gv: &str, names: &[&str]) -> APIResourceList {
        APIResourceList {
            group_version: gv.into(),
            resources: names
                .iter()
                .map(|n| APIResource {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn each_api_needs_all_of_its_resources() {
        let served = ServedApis::from_discovery(&[
            list(
                ADMISSION_GROUP_VERSION,
                &[
                    "validatingwebhookconfigurations",
                    "validatingadmissionpolicies",
                    "validatingadmissionpolicybindings",
                ],
            ),
            list(MCO_GROUP_VERSION, &["machineconfigs"]),
        ]);
        assert_eq!(
            served,
            ServedApis {
                validating_admission_policy: true,
                machine_config: false,
                monitoring: false,
            },
            "machineconfigpools missing: no MCO"
        );
        assert_eq!(ServedApis::from_discovery(&[]), ServedApis::default());
    }

    #[test]
    fn only_listed_relevant_group_versions_are_read() {
        let group = |name: &str, versions: &[&str]| APIGroup {
            name: name.into(),
            versions: versions
                .iter()
                .map(|v| GroupVersionForDiscovery {
                    group_version: format!("{name}/{v}"),
                    version: v.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        let groups = APIGroupList {
            groups: vec![
                group("admissionregistration.k8s.io", &["v1", "v1beta1"]),
                group("apps", &["v1"]),
                group("monitoring.coreos.com", &["v1", "v1alpha1"]),
            ],
        };
        assert_eq!(
            relevant_group_versions(&groups),
            [ADMISSION_GROUP_VERSION, MONITORING_GROUP_VERSION]
        );
    }

    #[tokio::test]
    async fn a_fixed_answer_is_ready_at_once() {
        let served = ServedApis {
            machine_config: true,
            ..Default::default()
        };
        let d = Discovery::fixed(served);
        assert_eq!(d.current(), Some(served));
        assert_eq!(d.ready().await, Some(served));
    }
}
