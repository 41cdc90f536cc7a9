//! Readiness bookkeeping shared by every task: each component registers itself and reports when
//! it is ready (caches synced, listener bound). `/readyz` is ready only when all of them are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a component that must become ready before the process is ready.
    pub fn register(&self, component: &'static str) {
        if let Ok(mut map) = self.components.lock() {
            map.entry(component).or_insert(false);
        }
    }

    pub fn set(&self, component: &'static str, ready: bool) {
        if let Ok(mut map) = self.components.lock() {
            map.insert(component, ready);
        }
    }

    /// `Ok(())` when every registered component is ready, else the names still waiting.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        let Ok(map) = self.components.lock() else {
            return Err(vec!["readiness-lock"]);
        };
        let waiting: Vec<_> = map.iter().filter(|(_, r)| !**r).map(|(n, _)| *n).collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }
}

/// Waits until a reflector store has its first full list.
///
/// kube's `Store::wait_until_ready` wakes only the most recent of several concurrent waiters (it
/// keeps a single oneshot receiver), so a readiness task and a reconcile waiting at the same time
/// could hang forever. Re-polling every 50 ms re-registers each waiter's waker.
pub async fn store_ready<K>(
    store: &kube::runtime::reflector::Store<K>,
) -> Result<(), kube::runtime::reflector::store::WriterDropped>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            store.wait_until_ready(),
        )
        .await
        {
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_registered_component_is() {
        let r = Readiness::new();
        assert_eq!(r.check(), Ok(()));
        r.register("webhook");
        r.register("controller");
        assert_eq!(r.check(), Err(vec!["controller", "webhook"]));
        r.set("webhook", true);
        assert_eq!(r.check(), Err(vec!["controller"]));
        r.set("controller", true);
        assert_eq!(r.check(), Ok(()));
        r.set("webhook", false);
        assert_eq!(r.check(), Err(vec!["webhook"]));
    }

    #[tokio::test]
    async fn concurrent_waiters_on_one_store_all_wake() {
        use k8s_openapi::api::core::v1::Node;
        use kube::runtime::{reflector, watcher};
        let (store, mut writer) = reflector::store::<Node>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { store_ready(&s).await })
            })
            .collect();
        // Let every waiter register before the store becomes ready.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(10), w).await;
            assert!(
                matches!(woke, Ok(Ok(Ok(())))),
                "a waiter never woke: {woke:?}"
            );
        }
    }
}
