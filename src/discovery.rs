//! What the API server serves, as far as the operator's choices depend on it: whether
//! ValidatingAdmissionPolicy v1 can hold the namespace gate, whether the Machine Config Operator's
//! API is there (OpenShift) or the node-installer backend must be used, and whether the
//! prometheus-operator's ServiceMonitor and PrometheusRule can be kept.
//!
//! Discovery is cheap (one `/apis` request plus one per relevant group version) and changes
//! rarely (a CRD installed later, an API server upgrade), so it is re-checked on an interval
//! rather than watched; [`crate::cache::ClusterCache`] keeps the answer and announces changes.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList};

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
}
