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

    /// Withdraws a component whose work stopped on purpose (a reconciler that stepped down as
    /// leader): the process no longer waits for it.
    pub fn withdraw(&self, component: &'static str) {
        if let Ok(mut map) = self.components.lock() {
            map.remove(component);
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

    #[test]
    fn a_withdrawn_component_is_not_waited_for_until_registered_again() {
        let r = Readiness::new();
        r.register("controller");
        r.withdraw("controller");
        assert_eq!(r.check(), Ok(()));
        r.register("controller");
        assert_eq!(r.check(), Err(vec!["controller"]));
    }
}
