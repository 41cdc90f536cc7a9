//! The monitoring objects the operator keeps itself: the Prometheus Role and RoleBinding, the
//! ServiceMonitor and the PrometheusRule of `packaging::monitoring`, in the operator namespace,
//! applied while `monitoring.coreos.com/v1` is served and owned by the operator's Deployment.
//!
//! Why not in the OLM bundle: OLM refuses a whole InstallPlan whose bundle holds an object of a
//! kind the cluster does not serve, so a bundle with a ServiceMonitor installs nothing where
//! prometheus-operator is absent. Why owned by the Deployment: OLM deletes the Deployment with the
//! CSV, and the garbage collector then deletes these (an operator upgrade keeps the Deployment, so
//! they survive it).
//!
//! Every replica runs this part (its applies are idempotent server-side applies under the one
//! field manager): at start, whenever discovery says the monitoring API appeared, and after a
//! failure with backoff. A monitoring API that goes away takes the objects with its CRDs.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cache::ClusterCache;
use crate::kubeapi::{self, CallError};
use crate::packaging::monitoring;

/// Settings of the part.
#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    /// The operator's own Deployment (`--owner-deployment`), owner of every object kept here.
    pub deployment: String,
    pub request_timeout: Duration,
    /// First retry delay after a failure; doubles per consecutive failure up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Config {
    pub fn new(namespace: &str, deployment: &str) -> Self {
        Config {
            namespace: namespace.to_string(),
            deployment: deployment.to_string(),
            request_timeout: kubeapi::REQUEST_TIMEOUT,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Why the objects could not be applied; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "reading Deployment {namespace}/{name}, the owner of the monitoring objects (--owner-deployment / OPERATOR_DEPLOYMENT_NAME must name the operator's own Deployment): {source}"
    )]
    Owner {
        namespace: String,
        name: String,
        #[source]
        source: CallError,
    },
    #[error("Deployment {namespace}/{name} has no uid yet; retrying")]
    OwnerWithoutUid { namespace: String, name: String },
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: CallError,
    },
    #[error("{kind} {name} does not deserialize as an object: {source}")]
    Build {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A non-blocking, non-controller reference to the Deployment: deleting the Deployment never
/// waits on these objects, and nothing else may not claim them.
pub fn deployment_owner(deployment: &Deployment) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: Deployment::api_version(&()).to_string(),
        kind: Deployment::kind(&()).to_string(),
        name: deployment.name_any(),
        uid: deployment.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

/// The objects to keep in `namespace`, each owned by `owner` (pure).
pub fn owned_objects(namespace: &str, owner: &OwnerReference) -> Vec<Value> {
    monitoring::monitoring_objects(Some(namespace))
        .into_iter()
        .map(|mut obj| {
            obj["metadata"]["ownerReferences"] = json!([owner]);
            obj
        })
        .collect()
}

fn api_resource(obj: &Value) -> ApiResource {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural)
}

/// Applies every object once, owned by the Deployment; returns how many were applied.
pub async fn ensure(client: &Client, cfg: &Config) -> Result<usize, Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &cfg.namespace);
    let deployment = kubeapi::bounded(cfg.request_timeout, deployments.get(&cfg.deployment))
        .await
        .map_err(|source| Error::Owner {
            namespace: cfg.namespace.clone(),
            name: cfg.deployment.clone(),
            source,
        })?;
    let owner = deployment_owner(&deployment).ok_or_else(|| Error::OwnerWithoutUid {
        namespace: cfg.namespace.clone(),
        name: cfg.deployment.clone(),
    })?;
    let objects = owned_objects(&cfg.namespace, &owner);
    for obj in &objects {
        let ar = api_resource(obj);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let dynamic: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|source| Error::Build {
                kind: ar.kind.clone(),
                name: name.clone(),
                source,
            })?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &cfg.namespace, &ar);
        kubeapi::apply(&api, &dynamic, cfg.request_timeout)
            .await
            .map_err(|source| Error::Apply {
                kind: ar.kind.clone(),
                namespace: cfg.namespace.clone(),
                name,
                source,
            })?;
    }
    Ok(objects.len())
}

/// Keeps the objects until `shutdown`.
pub async fn run(
    client: Client,
    cluster: ClusterCache,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Subscribe before the first look, so an appearance in between is not missed.
    let mut changes = cluster.subscribe();
    tokio::select! {
        _ = cluster.served_apis_ready() => {}
        () = shutdown.cancelled() => return Ok(()),
    }
    let mut applied = false;
    let mut failures: u32 = 0;
    loop {
        let served = cluster.served_apis().is_some_and(|s| s.monitoring);
        if !served {
            // Re-apply when it comes back: its CRDs' deletion took the objects.
            applied = false;
        } else if !applied {
            match ensure(&client, &cfg).await {
                Ok(n) => {
                    info!(objects = n, namespace = %cfg.namespace, "monitoring objects applied (ServiceMonitor, PrometheusRule, Prometheus Role and RoleBinding)");
                    applied = true;
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(error = %e, "cannot apply the monitoring objects; retrying");
                }
            }
        }
        let retry = (served && !applied).then(|| {
            let doublings = failures.saturating_sub(1).min(20);
            cfg.retry_base
                .saturating_mul(1 << doublings)
                .min(cfg.retry_max)
        });
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            change = changes.recv() => {
                if let Err(RecvError::Closed) = change {
                    return Ok(());
                }
            }
            () = sleep_or_forever(retry) => {}
        }
    }
}

async fn sleep_or_forever(delay: Option<Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        let mut d = Deployment::default();
        d.metadata.name = Some("op".into());
        d.metadata.uid = Some("uid-d".into());
        deployment_owner(&d).expect("has uid")
    }

    #[test]
    fn every_object_is_owned_by_the_deployment_without_blocking_it() {
        let objects = owned_objects("ns", &owner());
        let kinds: Vec<_> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            kinds,
            ["Role", "RoleBinding", "ServiceMonitor", "PrometheusRule"]
        );
        for o in &objects {
            assert_eq!(o["metadata"]["namespace"], "ns");
            let refs = o["metadata"]["ownerReferences"].as_array().expect("refs");
            assert_eq!(refs.len(), 1);
            assert_eq!(refs[0]["kind"], "Deployment");
            assert_eq!(refs[0]["apiVersion"], "apps/v1");
            assert_eq!(refs[0]["uid"], "uid-d");
            assert_eq!(refs[0]["blockOwnerDeletion"], false);
            assert_eq!(refs[0]["controller"], false);
        }
    }

    #[test]
    fn a_deployment_without_uid_is_no_owner() {
        assert_eq!(deployment_owner(&Deployment::default()), None);
        let e = Error::OwnerWithoutUid {
            namespace: "ns".into(),
            name: "op".into(),
        };
        assert_eq!(e.to_string(), "Deployment ns/op has no uid yet; retrying");
    }

    #[test]
    fn errors_name_the_object_and_the_cause() {
        let timeout = CallError::Timeout(Duration::from_secs(2));
        let e = Error::Apply {
            kind: "ServiceMonitor".into(),
            namespace: "ns".into(),
            name: "m".into(),
            source: timeout,
        };
        assert_eq!(
            e.to_string(),
            "applying ServiceMonitor ns/m: no answer from the API server within 2s"
        );
        let source = serde_json::from_value::<DynamicObject>(json!(1)).expect_err("not an object");
        let e = Error::Build {
            kind: "Role".into(),
            name: "r".into(),
            source,
        };
        assert!(
            e.to_string()
                .starts_with("Role r does not deserialize as an object: "),
            "{e}"
        );
    }

    #[test]
    fn plurals_are_the_served_resources() {
        let plurals: Vec<String> = owned_objects("ns", &owner())
            .iter()
            .map(|o| api_resource(o).plural)
            .collect();
        assert_eq!(
            plurals,
            [
                "roles",
                "rolebindings",
                "servicemonitors",
                "prometheusrules"
            ]
        );
        for plural in &plurals {
            let group = if plural.starts_with("role") {
                "rbac.authorization.k8s.io"
            } else {
                "monitoring.coreos.com"
            };
            for verb in ["create", "patch"] {
                assert!(
                    crate::packaging::rbac::allows(group, plural, verb, true),
                    "{verb} {plural}"
                );
            }
        }
    }
}
