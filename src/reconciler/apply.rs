//! The thin write layer: server-side apply with the one field manager, deletes, node label
//! patches, the finalizer and the status. It executes what the decision says and decides nothing.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
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
    pub fence: WriteFence,
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

    async fn ssa<K>(&self, obj: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let action = || format!("applying {} {}", K::kind(&()), obj.name_any());
        let timeout = self.bound(action)?;
        kubeapi::apply(&api, obj, timeout)
            .await
            .map(|_| ())
            .map_err(|e| Error::call(action(), e))
    }

    async fn delete<K>(&self, name: &str) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let action = || format!("deleting {} {name}", K::kind(&()));
        let timeout = self.bound(action)?;
        kubeapi::delete_ignoring_404(&api, name, timeout)
            .await
            .map(|_| ())
            .map_err(|e| Error::call(action(), e))
    }

    async fn merge<K>(&self, name: &str, patch: &Value) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
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
                Desired::Pool(p) => self.ssa(p).await,
                Desired::MachineConfig(m) => self.ssa(m).await,
                Desired::ContainerRuntimeConfig(c) => self.ssa(c).await,
                Desired::RuntimeClass(r) => self.ssa(r).await,
            },
            Action::Delete { kind, name } => match kind {
                Kind::Pool => self.delete::<MachineConfigPool>(name).await,
                Kind::MachineConfig => self.delete::<MachineConfig>(name).await,
                Kind::ContainerRuntimeConfig => self.delete::<ContainerRuntimeConfig>(name).await,
                Kind::RuntimeClass => self.delete::<RuntimeClass>(name).await,
            },
            Action::RemoveForeignKeys { kind, name, patch } => match kind {
                Kind::Pool => self.merge::<MachineConfigPool>(name, patch).await,
                Kind::MachineConfig => self.merge::<MachineConfig>(name, patch).await,
                Kind::ContainerRuntimeConfig => {
                    self.merge::<ContainerRuntimeConfig>(name, patch).await
                }
                Kind::RuntimeClass => self.merge::<RuntimeClass>(name, patch).await,
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
