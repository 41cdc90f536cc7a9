//! Liveness bookkeeping: what `/healthz` reports. A task that must keep making progress holds a
//! [`Heartbeat`] and beats it; `/healthz` fails, naming the task, once an armed heartbeat has been
//! silent for longer than the task's own bound. That is what "wedged" means here: a loop whose
//! every step is bounded in time (each API call has a timeout) has not completed a step for
//! longer than any step may take. Losing leader election is not wedged (the election loop keeps
//! beating while it campaigns), and a reconciler with nothing to do is not either (its heartbeat
//! is armed only while a reconcile runs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The process's heartbeats; cheap to clone, every clone sees the same set.
#[derive(Clone, Default)]
pub struct Liveness {
    slots: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    next_id: Arc<Mutex<u64>>,
}

/// One task's last sign of progress.
struct Slot {
    task: &'static str,
    max_silence: Duration,
    state: Mutex<Beat>,
}

#[derive(Clone, Copy)]
struct Beat {
    /// Disarmed: the task is idle by design (waiting for work) and cannot be wedged.
    armed: bool,
    last: Instant,
}

/// A task that has gone silent for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wedged {
    pub task: &'static str,
    pub silent_for: Duration,
    pub max_silence: Duration,
}

impl std::fmt::Display for Wedged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} made no progress for {:.1}s (bound {:.1}s)",
            self.task,
            self.silent_for.as_secs_f64(),
            self.max_silence.as_secs_f64()
        )
    }
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tasks: Vec<&'static str> = lock(&self.slots).values().map(|s| s.task).collect();
        f.debug_struct("Liveness").field("tasks", &tasks).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn liveness into a second panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    /// The slot's verdict at `now` (pure: state and clock are inputs).
    fn wedged_at(&self, now: Instant) -> Option<Wedged> {
        let beat = *lock(&self.state);
        let silent_for = now.saturating_duration_since(beat.last);
        (beat.armed && silent_for > self.max_silence).then_some(Wedged {
            task: self.task,
            silent_for,
            max_silence: self.max_silence,
        })
    }
}

impl Liveness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task`, armed: it must [`Heartbeat::beat`] at least every `max_silence`.
    /// Dropping the handle removes it (a task that ended on purpose is not wedged).
    pub fn heartbeat(&self, task: &'static str, max_silence: Duration) -> Heartbeat {
        let slot = Arc::new(Slot {
            task,
            max_silence,
            state: Mutex::new(Beat {
                armed: true,
                last: Instant::now(),
            }),
        });
        let id = {
            let mut next = lock(&self.next_id);
            *next += 1;
            *next
        };
        lock(&self.slots).insert(id, slot.clone());
        Heartbeat {
            id,
            slot,
            liveness: self.clone(),
        }
    }

    /// `Ok(())` while no armed heartbeat is overdue, else every overdue task.
    pub fn check(&self) -> Result<(), Vec<Wedged>> {
        let now = Instant::now();
        let wedged: Vec<Wedged> = lock(&self.slots)
            .values()
            .filter_map(|s| s.wedged_at(now))
            .collect();
        if wedged.is_empty() {
            Ok(())
        } else {
            Err(wedged)
        }
    }
}

/// A registered task's handle (see [`Liveness::heartbeat`]).
pub struct Heartbeat {
    id: u64,
    slot: Arc<Slot>,
    liveness: Liveness,
}

impl Heartbeat {
    /// The task made progress (and is expected to keep making it).
    pub fn beat(&self) {
        *lock(&self.slot.state) = Beat {
            armed: true,
            last: Instant::now(),
        };
    }

    /// The task is idle by design until the next [`Heartbeat::beat`].
    pub fn rest(&self) {
        lock(&self.slot.state).armed = false;
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        lock(&self.liveness.slots).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(armed: bool, last: Instant) -> Slot {
        Slot {
            task: "leader-election",
            max_silence: Duration::from_secs(30),
            state: Mutex::new(Beat { armed, last }),
        }
    }

    #[test]
    fn an_armed_task_silent_past_its_bound_is_wedged() {
        let t0 = Instant::now();
        let s = slot(true, t0);
        assert_eq!(s.wedged_at(t0 + Duration::from_secs(30)), None);
        let w = s
            .wedged_at(t0 + Duration::from_secs(31))
            .expect("wedged after 31 s");
        assert_eq!(
            w.to_string(),
            "leader-election made no progress for 31.0s (bound 30.0s)"
        );
    }

    #[test]
    fn a_resting_task_is_never_wedged() {
        let t0 = Instant::now();
        assert_eq!(
            slot(false, t0).wedged_at(t0 + Duration::from_secs(3600)),
            None
        );
    }

    #[test]
    fn beating_resting_and_dropping_change_the_verdict() {
        let live = Liveness::new();
        let hb = live.heartbeat("controller", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let wedged = live.check().expect_err("silent past a zero bound");
        assert_eq!(wedged[0].task, "controller");
        hb.rest();
        assert_eq!(live.check(), Ok(()));
        drop(hb);
        assert_eq!(live.check(), Ok(()));
        assert!(lock(&live.slots).is_empty(), "dropped handles deregister");
    }
}
