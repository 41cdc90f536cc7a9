//! The request log (every request as the server saw it, with its authorization checks) and the
//! faults a test injects into the next matching requests.

use std::time::Duration;

use super::FakeApi;
use super::authz::Attributes;
use super::store::{Msg, State};

/// One API request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    /// The plural resource, without subresource.
    pub resource: String,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub is_write: bool,
    /// The `fieldManager` query parameter of a write, if any.
    pub field_manager: Option<String>,
    /// For patches: `apply`, `merge`, `json` or `strategic`.
    pub patch_type: Option<String>,
    /// Which client sent it: `"operator"` for [`FakeApi::client`], else the [`FakeApi::client_as`] name.
    pub client: String,
    /// Who the request was authenticated as.
    pub user: String,
    /// Every authorization check the server made for it, in order (the request filter's verb,
    /// then `create` for an apply that creates, then the ownerReference admission checks).
    pub authorizations: Vec<Authorization>,
    /// Answered 403 Forbidden.
    pub forbidden: bool,
    /// Never reached the server: it was unreachable ([`FakeApi::set_unreachable`]); the client
    /// got a connection error. Still counted by the write counters (a write was attempted).
    pub refused: bool,
    pub(super) seq: u64,
}

/// One authorization check and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub attributes: Attributes,
    pub allowed: bool,
}

/// How an injected fault fails a request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this HTTP code and a Status body (429 also carries `Retry-After: 1`).
    Status(u16),
    /// Hold the request this long, then answer 504 Timeout (a hung server).
    Timeout(Duration),
    /// End every open watch stream now (applied at `inject` time; `times` is ignored).
    CloseWatches,
}

/// A fault for the next `times` requests that match `verb` and `resource` (None = any).
#[derive(Clone, Debug)]
pub struct Fault {
    pub verb: Option<String>,
    pub resource: Option<String>,
    /// Only requests of this client (`RequestRecord::client`); None = any client.
    pub client: Option<String>,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// Fail any request.
    pub fn any(kind: FaultKind, times: usize) -> Self {
        Fault {
            verb: None,
            resource: None,
            client: None,
            kind,
            times,
        }
    }
    /// Fail requests with this verb (`"patch"`, ...) on this plural resource (`"nodes"` matches
    /// the resource and its subresources, `"kataconfigs/status"` only the status subresource).
    pub fn on(verb: &str, resource: &str, kind: FaultKind, times: usize) -> Self {
        Fault {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            client: None,
            kind,
            times,
        }
    }
    /// Only requests of `client`, so a simulator writing the same resource cannot take the
    /// fault meant for the operator.
    pub fn from_client(mut self, client: &str) -> Self {
        self.client = Some(client.into());
        self
    }
    fn matches(&self, rec: &RequestRecord) -> bool {
        self.verb.as_deref().is_none_or(|v| v == rec.verb)
            && self.client.as_deref().is_none_or(|c| c == rec.client)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| match r.split_once('/') {
                    Some((plural, sub)) => {
                        plural == rec.resource && rec.subresource.as_deref() == Some(sub)
                    }
                    None => r == rec.resource,
                })
    }
}

impl State {
    /// Appends a request to the log and returns its sequence number.
    pub(super) fn log(&mut self, mut record: RequestRecord) -> u64 {
        self.next_seq += 1;
        record.seq = self.next_seq;
        self.requests.push(record);
        self.next_seq
    }

    /// The fault the request meets, if any: the first injected one that matches it, used up once.
    pub(super) fn take_fault(&mut self, record: &RequestRecord) -> Option<FaultKind> {
        let i = self
            .faults
            .iter()
            .position(|f| f.times > 0 && f.matches(record))?;
        self.faults[i].times -= 1;
        let k = self.faults[i].kind.clone();
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        Some(k)
    }
}

impl FakeApi {
    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// Requests sent by one client (see [`FakeApi::client_as`]).
    pub fn requests_by(&self, client: &str) -> Vec<RequestRecord> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.client == client)
            .cloned()
            .collect()
    }

    /// Write requests sent by one client, e.g. `write_count_by("operator")`.
    pub fn write_count_by(&self, client: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.is_write && r.client == client)
            .count()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Requests answered 403 Forbidden.
    pub fn forbidden_requests(&self) -> Vec<RequestRecord> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.forbidden)
            .cloned()
            .collect()
    }

    /// Every authorization check made for one client's requests, in order.
    pub fn authorizations_by(&self, client: &str) -> Vec<Authorization> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.client == client)
            .flat_map(|r| r.authorizations.iter().cloned())
            .collect()
    }

    /// Requests that could change state (create/update/patch/delete), failed ones included.
    pub fn write_count(&self) -> usize {
        self.state().requests.iter().filter(|r| r.is_write).count()
    }

    /// Fail matching requests (see [`FaultKind`]). `CloseWatches` acts immediately.
    pub fn inject(&self, fault: Fault) {
        if let FaultKind::CloseWatches = fault.kind {
            self.close_watches();
            return;
        }
        self.state().faults.push(fault);
    }

    /// Drops every injected fault not used up yet.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// End every open watch stream (clients must re-watch or re-list).
    pub fn close_watches(&self) {
        let _ = self.inner.tx.send(Msg::Close);
    }

    /// Takes the whole server down (`true`) or brings it back (`false`), like a kube-apiserver
    /// that was stopped: from now on every request of every client fails at the connection level
    /// (kube's client gets a transport error, "connection refused", never an API answer), and
    /// every open watch is cut off with a connection reset. The store keeps its state. Refused
    /// requests are logged with [`RequestRecord::refused`], so a test sees what each client
    /// tried while the server was down.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.inner
            .unreachable
            .store(unreachable, std::sync::atomic::Ordering::SeqCst);
        if unreachable {
            let _ = self.inner.tx.send(Msg::Sever);
        }
    }

    /// Whether [`FakeApi::set_unreachable`] took the server down.
    pub fn is_unreachable(&self) -> bool {
        self.inner
            .unreachable
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}
