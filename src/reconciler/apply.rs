//! The thin write layer: server-side apply with the one field manager, deletes, node label
//! patches, the finalizer and the status. It executes what the decision says and decides nothing.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{
    ContainerRuntimeConfig, KataConfig, KataConfigStatus, MachineConfig, MachineConfigPool,
};
use crate::names::{FIELD_MANAGER, FINALIZER, KATA_ROLE_LABEL};

use super::action::{Action, Desired, Kind};
use super::error::Error;
use crate::kubeapi::{self, WriteFence};

const NODE_LISTS: [&str; 7] = [
    "installed",
    "installing",
    "waitingToInstall",
    "failedToInstall",
    "uninstalling",
    "waitingToUninstall",
    "failedToUninstall",
];

/// Executes actions against the API server, each bounded by `timeout` and by what is left of
/// the leadership term (`fence`): no write is sent once the term has ended.
pub struct Writer {
    pub client: Client,
    pub timeout: Duration,
    /// The operator namespace (the node installer lives there).
    pub namespace: String,
    /// No write is sent once the leadership term has ended.
    pub fence: WriteFence,
}

/// The bounds every kind the writer handles meets.
trait Writable:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}
impl<K> Writable for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug
{
}

impl Writer {
    /// The bound for the next write, or the error saying why it is not sent.
    fn bound(&self, action: impl FnOnce() -> String) -> Result<Duration, Error> {
        self.fence
            .bound(self.timeout)
            .map_err(|e| Error::not_leader(action(), e))
    }

    /// `fut` is lazy: nothing is sent unless the fence allows it and it is polled.
    async fn call<T>(
        &self,
        action: impl Fn() -> String,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        let timeout = self.bound(&action)?;
        kubeapi::bounded(timeout, fut)
            .await
            .map_err(|e| Error::call(action(), e))
    }

    fn cluster<K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>>(
        &self,
    ) -> Api<K> {
        Api::all(self.client.clone())
    }

    fn in_namespace<K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn ssa<K: Writable>(&self, api: Api<K>, obj: &K) -> Result<(), Error> {
        let action = || format!("applying {} {}", K::kind(&()), obj.name_any());
        let timeout = self.bound(action)?;
        kubeapi::apply(&api, obj, timeout)
            .await
            .map(|_| ())
            .map_err(|e| Error::call(action(), e))
    }

    async fn delete<K: Writable>(&self, api: Api<K>, name: &str) -> Result<(), Error> {
        let action = || format!("deleting {} {name}", K::kind(&()));
        let timeout = self.bound(action)?;
        kubeapi::delete_ignoring_404(&api, name, timeout)
            .await
            .map(|_| ())
            .map_err(|e| Error::call(action(), e))
    }

    async fn merge<K: Writable>(
        &self,
        api: Api<K>,
        name: &str,
        patch: &Value,
    ) -> Result<(), Error> {
        self.call(
            || {
                format!(
                    "removing foreign selector keys from {} {name}",
                    K::kind(&())
                )
            },
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
        .map(|_| ())
    }

    /// Sets or removes the kata node-role label with a merge patch, which works whoever set it.
    /// A node that left the cluster needs no label change.
    async fn label(&self, node: &str, add: bool) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let value = if add { json!("") } else { Value::Null };
        let patch = json!({ "metadata": { "labels": { KATA_ROLE_LABEL: value } } });
        let res = self
            .call(
                || {
                    format!(
                        "{} label {KATA_ROLE_LABEL} on node {node}",
                        if add { "setting" } else { "removing" }
                    )
                },
                api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
        Error::ok_if_absent(res.map(|_| ()))
    }

    /// Adds or removes our finalizer. The merge patch carries the resourceVersion we decided on,
    /// so a concurrent change of the list is a conflict (retried) instead of a lost update.
    async fn finalizer(&self, kc: &KataConfig, add: bool) -> Result<(), Error> {
        let api: Api<KataConfig> = Api::all(self.client.clone());
        let mut list: Vec<String> = kc
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != FINALIZER)
            .cloned()
            .collect();
        if add {
            list.push(FINALIZER.to_string());
        }
        let patch = json!({ "metadata": {
            "finalizers": list,
            "resourceVersion": kc.resource_version(),
        }});
        let name = kc.name_any();
        let res = self
            .call(
                || {
                    format!(
                        "{} finalizer {FINALIZER} on KataConfig {name}",
                        if add { "adding" } else { "removing" }
                    )
                },
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            .map(|_| ());
        // A KataConfig already gone needs no finalizer removed.
        if add { res } else { Error::ok_if_absent(res) }
    }

    pub async fn execute(&self, kc: &KataConfig, action: &Action) -> Result<(), Error> {
        match action {
            Action::AddFinalizer => self.finalizer(kc, true).await,
            Action::RemoveFinalizer => self.finalizer(kc, false).await,
            Action::Apply(d) => match d.as_ref() {
                Desired::Pool(p) => self.ssa(self.cluster(), p).await,
                Desired::MachineConfig(m) => self.ssa(self.cluster(), m).await,
                Desired::ContainerRuntimeConfig(c) => self.ssa(self.cluster(), c).await,
                Desired::RuntimeClass(r) => self.ssa(self.cluster(), r).await,
                Desired::DaemonSet(ds) => self.ssa(self.in_namespace(), &**ds).await,
                Desired::ConfigMap(c) => self.ssa(self.in_namespace(), c).await,
            },
            Action::Delete { kind, name } => match kind {
                Kind::Pool => self.delete(self.cluster::<MachineConfigPool>(), name).await,
                Kind::MachineConfig => self.delete(self.cluster::<MachineConfig>(), name).await,
                Kind::ContainerRuntimeConfig => {
                    self.delete(self.cluster::<ContainerRuntimeConfig>(), name)
                        .await
                }
                Kind::RuntimeClass => self.delete(self.cluster::<RuntimeClass>(), name).await,
                Kind::DaemonSet => self.delete(self.in_namespace::<DaemonSet>(), name).await,
                Kind::ConfigMap => self.delete(self.in_namespace::<ConfigMap>(), name).await,
            },
            Action::RemoveForeignKeys { kind, name, patch } => match kind {
                Kind::Pool => {
                    self.merge(self.cluster::<MachineConfigPool>(), name, patch)
                        .await
                }
                Kind::MachineConfig => {
                    self.merge(self.cluster::<MachineConfig>(), name, patch)
                        .await
                }
                Kind::ContainerRuntimeConfig => {
                    self.merge(self.cluster::<ContainerRuntimeConfig>(), name, patch)
                        .await
                }
                Kind::RuntimeClass => {
                    self.merge(self.cluster::<RuntimeClass>(), name, patch)
                        .await
                }
                Kind::DaemonSet => {
                    self.merge(self.in_namespace::<DaemonSet>(), name, patch)
                        .await
                }
                Kind::ConfigMap => {
                    self.merge(self.in_namespace::<ConfigMap>(), name, patch)
                        .await
                }
            },
            Action::LabelNode(n) => self.label(n, true).await,
            Action::UnlabelNode(n) => self.label(n, false).await,
        }
    }

    /// Applies the whole status through the status subresource (we own every status field).
    pub async fn status(&self, kc: &KataConfig, status: &KataConfigStatus) -> Result<(), Error> {
        let api: Api<KataConfig> = Api::all(self.client.clone());
        let name = kc.name_any();
        let mut status_json = serde_json::to_value(status).map_err(|source| Error::Serialize {
            what: format!("status of KataConfig {name}"),
            source,
        })?;
        // Every node list is written, empty ones as `[]`, so a list that empties is cleared
        // even by servers that merge applied objects instead of tracking field ownership.
        if let Some(nodes) = status_json
            .get_mut("kataNodes")
            .and_then(Value::as_object_mut)
        {
            for key in NODE_LISTS {
                nodes.entry(key).or_insert_with(|| json!([]));
            }
        }
        let body = json!({
            "apiVersion": KataConfig::api_version(&()),
            "kind": KataConfig::kind(&()),
            "metadata": { "name": name },
            "status": status_json,
        });
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let res = self
            .call(
                || format!("updating status of KataConfig {name}"),
                api.patch_status(&name, &pp, &Patch::Apply(&body)),
            )
            .await;
        // Deleted meanwhile: there is no status left to report on.
        Error::ok_if_absent(res.map(|_| ()))
    }
}
