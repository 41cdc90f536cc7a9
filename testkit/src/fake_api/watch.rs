//! Watch streams: synthetic ADDED events for what exists (or a replay of the change history from
//! a resourceVersion, 410 Gone below the history floor), then live changes, bookmarks and the
//! `sendInitialEvents` end marker; objects leaving a label or field selector become DELETED.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::dispatch::Target;
use super::errors::{err_response, status_json};
use super::selectors::Filter;
use super::store::{Change, Msg, State};
use super::{BoxError, FakeApi, FakeBody};

/// What a watch request asks for, from its query.
struct WatchQuery {
    bookmarks: bool,
    initial_events: bool,
    from: Option<u64>,
    timeout: u64,
}

impl WatchQuery {
    fn parse(q: &BTreeMap<String, String>) -> WatchQuery {
        WatchQuery {
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
            initial_events: q.get("sendInitialEvents").is_some_and(|b| b == "true"),
            from: q
                .get("resourceVersion")
                .filter(|s| !s.is_empty())
                .and_then(|s| s.parse().ok()),
            timeout: q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1800),
        }
    }
}

/// The watched resource (and namespace) and selector: which changes become which events.
struct Scope {
    group: String,
    plural: String,
    namespace: Option<String>,
    filter: Filter,
}

impl Scope {
    /// The event a change is for this watch: ADDED/MODIFIED/DELETED as the object enters, stays
    /// in or leaves the selection; None when it is outside the watch or the selection.
    fn event(&self, c: &Change) -> Option<Value> {
        let in_scope = c.group == self.group
            && c.plural == self.plural
            && self.namespace.as_ref().is_none_or(|n| *n == c.namespace);
        if !in_scope {
            return None;
        }
        let old_m = c.old.as_ref().is_some_and(|o| self.filter.matches(o));
        let new_m = c.new.as_ref().is_some_and(|o| self.filter.matches(o));
        let (ty, obj) = match (old_m, new_m) {
            (false, true) => ("ADDED", c.new.clone()),
            (true, true) => ("MODIFIED", c.new.clone()),
            (true, false) => (
                "DELETED",
                c.new.clone().or_else(|| {
                    c.old.clone().map(|mut o| {
                        o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                        o
                    })
                }),
            ),
            (false, false) => return None,
        };
        Some(json!({"type": ty, "object": obj}))
    }
}

/// A BOOKMARK at `rv`; `end` marks the end of the initial events.
fn bookmark(t: &Target, rv: u64, end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": t.res.kind, "apiVersion": t.res.api_version(), "metadata": meta}})
}

/// The events a watch starts with, read under the store's lock.
fn initial_events(st: &State, t: &Target, wq: &WatchQuery, scope: &Scope) -> Vec<Value> {
    let mut initial = Vec::new();
    match wq.from {
        Some(rv) if rv > 0 && !wq.initial_events => {
            if rv < st.history_floor {
                initial.push(json!({"type": "ERROR", "object": status_json(410, "Expired", &format!("too old resource version: {rv} ({})", st.history_floor))}));
            } else {
                initial.extend(
                    st.history
                        .iter()
                        .filter(|c| c.rv > rv)
                        .filter_map(|c| scope.event(c)),
                );
            }
        }
        _ => {
            // No resourceVersion (or 0, or sendInitialEvents): synthetic ADDED for what exists.
            for (_, v) in st.select(t, &scope.filter) {
                initial.push(json!({"type": "ADDED", "object": v}));
            }
            if wq.initial_events {
                initial.push(bookmark(t, st.rv, true));
            }
        }
    }
    if wq.bookmarks && !wq.initial_events {
        initial.push(bookmark(t, st.rv, false));
    }
    initial
}

/// The live events of the watch, until the store tells watches to close (or they lag behind);
/// severed watches end with a connection error instead.
fn live_events(
    rx: broadcast::Receiver<Msg>,
    scope: Scope,
) -> impl Stream<Item = Result<Value, BoxError>> {
    futures::stream::unfold(Some((rx, scope)), |state| async move {
        let (mut rx, scope) = state?;
        loop {
            match rx.recv().await {
                Ok(Msg::Change(c)) => {
                    if let Some(ev) = scope.event(&c) {
                        return Some((Ok(ev), Some((rx, scope))));
                    }
                }
                Ok(Msg::Sever) => {
                    let reset = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "connection reset by peer (the in-memory API server is unreachable)",
                    );
                    return Some((Err(BoxError::from(reset)), None));
                }
                // Closed, lagged or told to close: end the stream; the client re-watches.
                Ok(Msg::Close) | Err(_) => return None,
            }
        }
    })
}

impl FakeApi {
    pub(super) fn watch(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Response<FakeBody> {
        let filter = match Filter::from_query(q) {
            Ok(f) => f,
            Err(e) => return err_response(&e),
        };
        let wq = WatchQuery::parse(q);
        let scope = Scope {
            group: t.res.group.clone(),
            plural: t.res.plural.clone(),
            namespace: t.namespace.clone(),
            filter,
        };
        let (initial, rx) = {
            let st = self.state();
            // Subscribed under the lock: no change falls between the initial events and live ones.
            let rx = self.inner.tx.subscribe();
            (initial_events(&st, t, &wq, &scope), rx)
        };
        let events = futures::stream::iter(initial.into_iter().map(Ok))
            .chain(live_events(rx, scope))
            .take_until(tokio::time::sleep(Duration::from_secs(wq.timeout)))
            .map(move |ev| {
                ev.map(|mut ev| {
                    if metadata_only
                        && matches!(ev["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED"))
                    {
                        ev["object"] = super::dispatch::metadata_only(ev["object"].take());
                    }
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    http_body::Frame::data(Bytes::from(line))
                })
            });
        let mut resp = Response::new(StreamBody::new(events).boxed_unsync());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp
    }
}
