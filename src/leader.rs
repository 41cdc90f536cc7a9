//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run and exactly
//! one reconciles. Leadership governs the reconciler only: the webhooks, metrics and health
//! endpoints serve on every replica, leader or not, and keep serving while it campaigns.
//!
//! Expiry is judged the way client-go does it: by how long *this* process has seen the Lease
//! record unchanged, not by comparing the holder's `renewTime` with the local clock, so clock
//! skew between nodes cannot hand the Lease over early.
//!
//! [`Election::run`] campaigns, leads one [`Term`] at a time and campaigns again when a term is
//! lost, until shutdown. Each term has a [`WriteFence`] whose deadline is the renew deadline (2/3
//! of the Lease duration) after the start of the last successful renewal; every write of the
//! term's work goes through it, so none is sent, or still awaited, after that deadline — which
//! falls a third of a Lease duration before any other replica may take the Lease. When renewal
//! fails past the deadline (or another replica holds the Lease) the term ends: its work is
//! stopped (and aborted if it does not stop within that third), the `kata_operator_leader` gauge
//! goes to 0 and the process campaigns again; a re-acquired Lease starts a fresh term with fresh
//! work. Shutdown ends the term and releases the Lease so a successor takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::kubeapi::WriteFence;
use crate::observability::{Heartbeat, Liveness, Metrics};

pub const LEASE_NAME: &str = "sandboxed-containers-operator-leader";

/// Name of the election loop's liveness heartbeat.
pub const HEARTBEAT: &str = "leader-election";

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub lease_name: String,
    /// How long a Lease stays valid without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How often a follower retries to acquire, and a leader whose renewal failed retries it.
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
    /// A term ends this long after the start of its last successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// What is left of the Lease after the renew deadline: the longest the work of a lost term
    /// may take to stop before it is aborted.
    fn stop_grace(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_deadline())
    }

    /// The election loop is wedged when it has not completed a round for this long (a round is
    /// one bounded attempt plus one wait, at most a Lease duration).
    pub fn wedged_after(&self) -> Duration {
        self.lease_duration * 2
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// One leadership term, handed to the work that runs while it lasts.
pub struct Term {
    /// 1 for the first term this process leads, then 2, ...
    pub number: u64,
    /// Cancelled when the term ends (shutdown or leadership lost); the work must return soon.
    pub stop: CancellationToken,
    /// Open while this replica may write; every write of the work goes through it.
    pub fence: WriteFence,
}

/// A candidate for the Lease, and where it reports.
pub struct Election {
    pub client: Client,
    pub namespace: String,
    /// The Lease holder name (the pod name).
    pub identity: String,
    pub config: LeaderConfig,
    /// `kata_operator_leader`.
    pub metrics: Arc<Metrics>,
    /// Where the election loop's heartbeat [`HEARTBEAT`] is registered.
    pub liveness: Liveness,
}

/// How one term ended.
enum TermEnd {
    /// The work ended (after shutdown, or on its own): the election ends with its result.
    Finished(anyhow::Result<()>),
    /// Leadership lost, work stopped: campaign again.
    Lost,
}

/// Why the renew loop stopped holding the Lease.
enum Hold {
    WorkEnded(Result<anyhow::Result<()>, tokio::task::JoinError>),
    Lost(String),
}

impl Election {
    /// Campaigns for the Lease and runs `lead` for every term won, until `shutdown`.
    ///
    /// `lead` gets each [`Term`] and must return soon after its `stop` token is cancelled.
    /// Returns `Ok` after a shutdown (Lease released); an error only when the work itself failed
    /// or panicked (the Lease is released then too). Losing the Lease is not an error.
    pub async fn run<F, Fut>(self, shutdown: CancellationToken, mut lead: F) -> anyhow::Result<()>
    where
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let heartbeat = self
            .liveness
            .heartbeat(HEARTBEAT, self.config.wedged_after());
        let mut elector = Elector {
            api: Api::namespaced(self.client.clone(), &self.namespace),
            identity: self.identity.clone(),
            config: self.config.clone(),
            seen: None,
        };
        let mut number = 0;
        loop {
            let Some(fence) = self.campaign(&mut elector, &heartbeat, &shutdown).await else {
                if number > 0 {
                    // A lost term may have left our name on the Lease: free it for a successor.
                    if let Err(e) = elector.release(self.config.renew_deadline()).await {
                        debug!(error = %format!("{e:#}"), "leader election: could not release the Lease at shutdown");
                    }
                }
                return Ok(());
            };
            number += 1;
            let term = Term {
                number,
                stop: shutdown.child_token(),
                fence,
            };
            match self
                .lead_term(&mut elector, &heartbeat, term, &mut lead)
                .await
            {
                TermEnd::Finished(result) => return result,
                TermEnd::Lost => {}
            }
        }
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.config.lease_name)
    }

    /// Retries every `retry_interval` until this replica holds the Lease (its term's fence) or
    /// shutdown (`None`).
    async fn campaign(
        &self,
        elector: &mut Elector,
        heartbeat: &Heartbeat,
        shutdown: &CancellationToken,
    ) -> Option<WriteFence> {
        let deadline = self.config.renew_deadline();
        let mut failures = 0u32;
        loop {
            heartbeat.beat();
            let started = Instant::now();
            match elector.round(deadline).await {
                Ok(Round::Holding) => return Some(WriteFence::until(started + deadline)),
                Ok(Round::HeldByOther | Round::Conflict) => failures = 0,
                Err(e) => {
                    failures += 1;
                    // The first failure of a streak is news; the rest repeat it every retry.
                    if failures == 1 {
                        warn!(lease = %self.lease_ref(), error = %format!("{e:#}"), "leader election: cannot read or take the Lease; retrying");
                    } else {
                        debug!(lease = %self.lease_ref(), failures, error = %format!("{e:#}"), "leader election: still cannot reach the Lease");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.config.retry_interval) => {}
            }
        }
    }

    /// Leads one term: starts the work, renews until the work ends or the Lease is lost, then
    /// stops the work (lost) or releases the Lease (work ended).
    async fn lead_term<F, Fut>(
        &self,
        elector: &mut Elector,
        heartbeat: &Heartbeat,
        term: Term,
        lead: &mut F,
    ) -> TermEnd
    where
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        info!(identity = %self.identity, lease = %self.lease_ref(), term = term.number, "became leader");
        self.metrics.leader.set(1);
        let (stop, fence) = (term.stop.clone(), term.fence.clone());
        let mut work = tokio::spawn(lead(term));
        let hold = self.hold(elector, heartbeat, &fence, &mut work).await;
        self.metrics.leader.set(0);
        match hold {
            Hold::WorkEnded(joined) => {
                // Shutdown, or the work ended by itself: hand over at once.
                fence.close();
                if let Err(e) = elector.release(self.config.renew_deadline()).await {
                    warn!(error = %format!("{e:#}"), "leader election: could not release the Lease");
                }
                TermEnd::Finished(joined.unwrap_or_else(|join| {
                    Err(anyhow!("the leader's work panicked or was aborted: {join}"))
                }))
            }
            Hold::Lost(why) => {
                fence.close();
                stop.cancel();
                warn!(
                    lease = %self.lease_ref(),
                    "lost leadership of Lease {}: {why}; stepping down (the reconciler stops, webhooks keep serving) and campaigning again",
                    self.lease_ref()
                );
                match self.stop_work(work).await {
                    Ok(()) => TermEnd::Lost,
                    Err(e) => TermEnd::Finished(Err(e)),
                }
            }
        }
    }

    /// Renews every `renew_interval` (every `retry_interval` after a failure) while the work
    /// runs. Each attempt is bounded by what is left of the term, so a hung API server cannot
    /// keep the loop past the fence's deadline.
    async fn hold(
        &self,
        elector: &mut Elector,
        heartbeat: &Heartbeat,
        fence: &WriteFence,
        work: &mut JoinHandle<anyhow::Result<()>>,
    ) -> Hold {
        let deadline = self.config.renew_deadline();
        let mut last_error: Option<String> = None;
        loop {
            let every = match last_error {
                Some(_) => self.config.retry_interval,
                None => self.config.renew_interval,
            };
            let wait = fence.bound(every).unwrap_or(Duration::ZERO);
            tokio::select! {
                joined = &mut *work => return Hold::WorkEnded(joined),
                () = tokio::time::sleep(wait) => {}
            }
            heartbeat.beat();
            let started = Instant::now();
            let Ok(bound) = fence.bound(deadline) else {
                let why = last_error.unwrap_or_else(|| "no renewal attempt completed".into());
                return Hold::Lost(format!("could not renew within {deadline:?}: {why}"));
            };
            match elector.round(bound).await {
                Ok(Round::Holding) => {
                    if last_error.take().is_some() {
                        info!(lease = %self.lease_ref(), "leader election: renewed the Lease again");
                    }
                    fence.extend(started + deadline);
                }
                Ok(Round::HeldByOther) => {
                    return Hold::Lost("another replica holds the Lease".into());
                }
                Ok(Round::Conflict) => last_error = Some("the Lease changed under us".into()),
                Err(e) => {
                    let e = format!("{e:#}");
                    warn!(lease = %self.lease_ref(), error = %e, "leader election: renewal failed; retrying until the renew deadline");
                    last_error = Some(e);
                }
            }
        }
    }

    /// Waits for the work of a lost term to stop; aborts it if it takes longer than the rest of
    /// the Lease (its writes are fenced already, this only frees its resources). A panic of the
    /// work is reported as the error it is.
    async fn stop_work(&self, mut work: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
        let grace = self.config.stop_grace();
        let joined = match tokio::time::timeout(grace, &mut work).await {
            Ok(joined) => joined,
            Err(_) => {
                warn!(
                    "the reconciler did not stop within {grace:?} of losing the Lease; aborting it"
                );
                work.abort();
                work.await
            }
        };
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // It was stopping anyway; what it failed at is of no consequence now.
                warn!(error = %format!("{e:#}"), "the reconciler of the lost term ended with an error");
                Ok(())
            }
            Err(join) if join.is_cancelled() => Ok(()),
            Err(join) => {
                error!(error = %join, "the reconciler of the lost term panicked");
                Err(anyhow!("the leader's work panicked: {join}"))
            }
        }
    }
}

/// The answer of one election round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// This replica holds the Lease now (acquired or renewed).
    Holding,
    /// Another replica holds a Lease that has not expired.
    HeldByOther,
    /// The Lease changed between our read and our write (409): try again.
    Conflict,
}

/// What identifies one renewal of the Lease: holder and renewTime.
type LeaseRecord = (Option<String>, Option<MicroTime>);

struct Elector {
    api: Api<Lease>,
    identity: String,
    config: LeaderConfig,
    /// Last Lease record seen (holder, renewTime) and when it was first seen locally.
    seen: Option<(LeaseRecord, Instant)>,
}

impl Elector {
    fn now() -> MicroTime {
        MicroTime(jiff::Timestamp::now())
    }

    /// One election round, given up after `bound` (a hung API server must not hold the loop).
    async fn round(&mut self, bound: Duration) -> anyhow::Result<Round> {
        tokio::time::timeout(bound, self.try_acquire_or_renew())
            .await
            .unwrap_or_else(|_| {
                Err(anyhow!(
                    "no answer from the API server within {}s",
                    bound.as_secs_f64()
                ))
            })
    }

    /// Reads the Lease and takes or renews it if it is ours, free or expired.
    async fn try_acquire_or_renew(&mut self) -> anyhow::Result<Round> {
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
                Ok(_) => Ok(Round::Holding),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Conflict),
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
            return Ok(Round::HeldByOther);
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
            Ok(_) => Ok(Round::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Conflict),
            Err(e) => Err(e).context("updating the Lease"),
        }
    }

    /// Gives the Lease up (empty holder, 1 s duration) if we still hold it, within `bound`.
    async fn release(&mut self, bound: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(bound, self.release_now())
            .await
            .unwrap_or_else(|_| {
                Err(anyhow!(
                    "no answer from the API server within {}s",
                    bound.as_secs_f64()
                ))
            })
    }

    async fn release_now(&mut self) -> anyhow::Result<()> {
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
        assert_eq!(c.stop_grace(), Duration::from_secs(5));
        assert_eq!(c.wedged_after(), Duration::from_secs(30));
        assert_eq!(c.duration_seconds(), 15);
    }
}
