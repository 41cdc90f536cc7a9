//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run and exactly
//! one reconciles.
//!
//! Expiry is judged the way client-go does it: by how long *this* process has seen the Lease
//! record unchanged, not by comparing the holder's `renewTime` with the local clock, so clock
//! skew between nodes cannot hand the Lease over early. A leader that cannot renew within the
//! renew deadline (2/3 of the Lease duration) stops leading before anybody else may take over.
//! Losing the Lease ends [`run_with_config`] with an error (the process should exit and be
//! restarted as a follower, as controller-runtime operators do); shutdown releases the Lease so
//! a successor takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::observability::Metrics;

pub const LEASE_NAME: &str = "sandboxed-containers-operator-leader";

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub lease_name: String,
    /// How long a Lease stays valid without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How often a follower retries to acquire.
    pub retry_interval: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            lease_name: LEASE_NAME.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }
}

impl LeaderConfig {
    fn renew_deadline(&self) -> Duration {
        self.lease_duration.mul_f64(2.0 / 3.0)
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Waits for the Lease, runs `lead` while holding it, and releases it on shutdown.
///
/// `lead` gets a token cancelled on shutdown or on loss of the Lease and must return soon after.
/// Returns `Ok` after a shutdown (Lease released) and an error when leadership was lost.
pub async fn run_with_config<F, Fut>(
    client: Client,
    namespace: &str,
    identity: String,
    config: LeaderConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    lead: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut elector = Elector {
        api: Api::namespaced(client, namespace),
        namespace: namespace.to_string(),
        identity,
        config,
        seen: None,
    };
    // Follower: retry until acquired or shut down.
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leader election: could not read or take the Lease")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(elector.config.retry_interval) => {}
        }
    }
    tracing::info!(identity = %elector.identity, lease = %elector.config.lease_name, "became leader");
    metrics.leader.set(1);
    let child = shutdown.child_token();
    let mut task = tokio::spawn(lead(child.clone()));
    let mut last_renew = Instant::now();
    let outcome = loop {
        tokio::select! {
            res = &mut task => break Exit::Finished(res),
            () = tokio::time::sleep(elector.config.renew_interval) => {
                match elector.try_acquire_or_renew().await {
                    Ok(true) => last_renew = Instant::now(),
                    Ok(false) => break Exit::Lost("another replica holds the Lease".into()),
                    Err(e) => {
                        tracing::warn!(error = %e, "leader election: renewal failed");
                        if last_renew.elapsed() >= elector.config.renew_deadline() {
                            break Exit::Lost(format!("could not renew within {:?}: {e}", elector.config.renew_deadline()));
                        }
                    }
                }
            }
        }
    };
    let result = match outcome {
        Exit::Finished(res) => {
            // Shutdown or the work itself ended: hand over at once.
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "leader election: could not release the Lease");
            }
            match res {
                Ok(r) => r,
                Err(join) => Err(anyhow!("leader task panicked or was aborted: {join}")),
            }
        }
        Exit::Lost(why) => {
            child.cancel();
            // Wait for the work to stop; it must not overlap with the next leader.
            let _ = task.await;
            Err(anyhow!(
                "lost leadership of Lease {}/{}: {why}",
                elector.namespace,
                elector.config.lease_name
            ))
        }
    };
    metrics.leader.set(0);
    result
}

enum Exit {
    Finished(Result<anyhow::Result<()>, tokio::task::JoinError>),
    Lost(String),
}

/// What identifies one renewal of the Lease: holder and renewTime.
type LeaseRecord = (Option<String>, Option<MicroTime>);

struct Elector {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    config: LeaderConfig,
    /// Last Lease record seen (holder, renewTime) and when it was first seen locally.
    seen: Option<(LeaseRecord, Instant)>,
}

impl Elector {
    fn now() -> MicroTime {
        MicroTime(jiff::Timestamp::now())
    }

    /// One election round. `Ok(true)`: we hold the Lease now.
    async fn try_acquire_or_renew(&mut self) -> anyhow::Result<bool> {
        let name = self.config.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await.context("reading the Lease")? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.config.duration_seconds()),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e).context("creating the Lease"),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (holder.clone(), spec.renew_time.clone());
        let now = Instant::now();
        let seen_since = match &self.seen {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.seen = Some((record, now));
                now
            }
        };
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1)))
            .unwrap_or(self.config.lease_duration);
        let expired = now.duration_since(seen_since) >= duration;
        if !(ours || holder.is_none() || expired) {
            return Ok(false);
        }
        let mut new = spec;
        if !ours {
            new.acquire_time = Some(Self::now());
            new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + 1);
        }
        new.holder_identity = Some(self.identity.clone());
        new.lease_duration_seconds = Some(self.config.duration_seconds());
        new.renew_time = Some(Self::now());
        lease.spec = Some(new);
        // Replace carries the resourceVersion we read: a concurrent taker gets a conflict.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e).context("updating the Lease"),
        }
    }

    /// Gives the Lease up (empty holder, 1 s duration) if we still hold it.
    async fn release(&mut self) -> anyhow::Result<()> {
        let name = self.config.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        lease.spec = Some(spec);
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %name, "released leadership");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = LeaderConfig::default();
        assert_eq!(c.lease_name, "sandboxed-containers-operator-leader");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_interval, Duration::from_secs(5));
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert_eq!(c.duration_seconds(), 15);
    }
}
