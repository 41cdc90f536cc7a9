//! The in-memory API server through kube's client: CRUD, selectors, pagination, server-side
//! apply, patches, status isolation, finalizers and garbage collection, watches, faults, the
//! request log, reviews, CRD registration and the Status bodies of bad requests.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use sandboxed_containers_operator::api::KataConfig;
use serde_json::{Value, json};
use testkit::{FakeApi, Fault, FaultKind, eventually};

use super::{api_code, cm, kata};

#[tokio::test]
async fn create_get_list_with_selectors_and_conflicts() {
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    let pp = PostParams::default();
    let a = api
        .create(&pp, &cm("a", json!({"app": "x", "tier": "web"})))
        .await
        .expect("create a");
    api.create(&pp, &cm("b", json!({"app": "y"})))
        .await
        .expect("create b");
    assert!(!a.uid().unwrap_or_default().is_empty(), "uid assigned");
    assert!(
        a.creation_timestamp().is_some(),
        "creationTimestamp assigned"
    );
    assert_eq!(a.metadata.generation, Some(1));

    let again = api
        .create(&pp, &cm("a", json!({})))
        .await
        .expect_err("duplicate");
    assert_eq!(api_code(again), (409, "AlreadyExists".into()));
    let missing = api.get("zzz").await.expect_err("missing");
    assert_eq!(api_code(missing), (404, "NotFound".into()));

    let sel = |s: &str| ListParams::default().labels(s);
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(names(api.list(&sel("app=x")).await.expect("list")), ["a"]);
    assert_eq!(
        names(api.list(&sel("app in (x,y)")).await.expect("list")),
        ["a", "b"]
    );
    assert_eq!(names(api.list(&sel("app!=x")).await.expect("list")), ["b"]);
    assert_eq!(names(api.list(&sel("tier")).await.expect("list")), ["a"]);
    assert_eq!(names(api.list(&sel("!tier")).await.expect("list")), ["b"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(names(by_name.clone()), ["b"]);
    assert!(
        by_name
            .metadata
            .resource_version
            .is_some_and(|rv| !rv.is_empty())
    );
    // Other namespaces are not listed; all-namespaces lists see everything.
    let other: Api<ConfigMap> = Api::namespaced(fake.client(), "ns2");
    assert!(
        other
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let all: Api<ConfigMap> = Api::all(fake.client());
    assert_eq!(
        all.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );

    // Collection delete honours the label selector.
    let gone = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=y"),
        )
        .await
        .expect("delete collection");
    let gone: Vec<String> = gone
        .left()
        .expect("list of deleted")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(gone, ["b"]);
    assert_eq!(
        names(api.list(&ListParams::default()).await.expect("list")),
        ["a"]
    );

    // PUT with a stale resourceVersion conflicts.
    let mut stale = a.clone();
    let mut fresh = api.get("a").await.expect("get");
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    api.replace("a", &pp, &fresh).await.expect("replace");
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    let conflict = api.replace("a", &pp, &stale).await.expect_err("stale");
    assert_eq!(api_code(conflict), (409, "Conflict".into()));
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let fake = FakeApi::unrestricted();
    for i in 0..5 {
        fake.insert(&cm(&format!("c{i}"), json!({})));
    }
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        rest.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["c2", "c3", "c4"]
    );
    // The paged watcher sees all five.
    let seen: Vec<ConfigMap> = watcher(api, watcher::Config::default().page_size(2))
        .take_while(|e| futures::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
        .try_filter_map(|e| async move {
            Ok(if let watcher::Event::InitApply(o) = e {
                Some(o)
            } else {
                None
            })
        })
        .try_collect()
        .await
        .expect("initial list");
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_records_the_manager() {
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    let pp = PatchParams::apply("tester");
    let first = api
        .patch("s", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "1"}})))
        .await
        .expect("apply creates");
    assert_eq!(first.data.as_ref().expect("data")["a"], "1");
    let merged = api
        .patch("s", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "labels": {"l": "x"}}, "data": {"b": "2"}})))
        .await
        .expect("apply merges");
    let data = merged.data.clone().expect("data");
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("1", "2"));
    assert_eq!(merged.labels()["l"], "x");
    let managers: Vec<String> = merged
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["tester"]);
    // Re-applying the same thing is a no-op: no new resourceVersion.
    let same = api
        .patch("s", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "labels": {"l": "x"}}, "data": {"b": "2"}})))
        .await
        .expect("apply again");
    assert_eq!(same.resource_version(), merged.resource_version());
    // Apply without a field manager is refused like the real server does.
    let no_manager = fake
        .client()
        .request::<ConfigMap>(
            http::Request::patch("/api/v1/namespaces/ns1/configmaps/s")
                .header("content-type", "application/apply-patch+yaml")
                .body(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"}}"#.to_vec())
                .expect("request"),
        )
        .await
        .expect_err("no fieldManager");
    match no_manager {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 400);
            assert!(
                s.message.contains("fieldManager is required"),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn merge_patch_null_deletes_and_json_patch_test_guards() {
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    api.create(
        &PostParams::default(),
        &cm("m", json!({"a": "1", "b": "2"})),
    )
    .await
    .expect("create");
    let p = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "c": "3"}}})),
        )
        .await
        .expect("merge");
    assert_eq!(p.labels().keys().cloned().collect::<Vec<_>>(), ["b", "c"]);
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/b", "value": "nope"},
        {"op": "remove", "path": "/metadata/labels/b"},
    ]))
    .expect("patch");
    let failed = api
        .patch("m", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .expect_err("test op fails");
    assert_eq!(api_code(failed), (422, "Invalid".into()));
    let missing = api
        .patch(
            "nope",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {}})),
        )
        .await
        .expect_err("merge on missing");
    assert_eq!(api_code(missing), (404, "NotFound".into()));
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    let fake = FakeApi::unrestricted();
    let api: Api<KataConfig> = Api::all(fake.client());
    let created = api
        .create(&PostParams::default(), &kata("k"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    // A status write changes only status and does not bump generation.
    let st = api
        .patch_status("k", &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}, "spec": {"logLevel": "debug"}})))
        .await
        .expect("status patch");
    assert_eq!(st.metadata.generation, Some(1));
    assert!(st.status.is_some(), "status written");
    assert_eq!(
        st.spec.log_level, created.spec.log_level,
        "spec ignored on /status"
    );
    // A spec write ignores status and bumps generation.
    let sp = api
        .patch(
            "k",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"logLevel": "debug"}, "status": null})),
        )
        .await
        .expect("spec patch");
    assert_eq!(sp.metadata.generation, Some(2));
    assert!(sp.status.is_some(), "status kept on a spec write");
    // A metadata-only write does not bump generation.
    let md = api
        .patch(
            "k",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(md.metadata.generation, Some(2));
}

#[tokio::test]
async fn delete_with_finalizers_waits_for_them_and_owner_gc_cascades() {
    let fake = FakeApi::unrestricted();
    let client = fake.client();
    let kc: Api<KataConfig> = Api::all(client.clone());
    let mut k = kata("k");
    k.metadata.finalizers = Some(vec!["kataconfiguration.openshift.io/finalizer".into()]);
    let k = kc.create(&PostParams::default(), &k).await.expect("create");
    // A dependent owned by the KataConfig, and one owned by that dependent.
    let owner = |o: &kube::core::ObjectMeta, kind: &str, api_version: &str| json!([{"apiVersion": api_version, "kind": kind, "name": o.name, "uid": o.uid, "controller": true}]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ns1");
    let mut s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s1", "namespace": "ns1"}}))
            .expect("secret");
    s.metadata.owner_references = serde_json::from_value(owner(
        &k.metadata,
        "KataConfig",
        "kataconfiguration.openshift.io/v1",
    ))
    .expect("refs");
    let s = secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("secret");
    let mut c = cm("c1", json!({}));
    c.metadata.owner_references =
        serde_json::from_value(owner(&s.metadata, "Secret", "v1")).expect("refs");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns1");
    cms.create(&PostParams::default(), &c).await.expect("cm");

    let pending = kc
        .delete("k", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = pending
        .left()
        .expect("object returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        kc.get("k")
            .await
            .expect("still there")
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert!(
        secrets.get_opt("s1").await.expect("get").is_some(),
        "dependents stay while the owner exists"
    );

    kc.patch(
        "k",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("drop finalizer");
    assert!(
        kc.get_opt("k").await.expect("get").is_none(),
        "gone once finalizers are empty"
    );
    assert!(
        secrets.get_opt("s1").await.expect("get").is_none(),
        "owned secret collected"
    );
    assert!(
        cms.get_opt("c1").await.expect("get").is_none(),
        "grandchild collected"
    );

    // Orphan propagation leaves dependents alone; a plain delete answers a Success Status.
    let k2 = kc
        .create(&PostParams::default(), &kata("k2"))
        .await
        .expect("create");
    let mut s2: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s2", "namespace": "ns1"}}))
            .expect("secret");
    s2.metadata.owner_references = serde_json::from_value(owner(
        &k2.metadata,
        "KataConfig",
        "kataconfiguration.openshift.io/v1",
    ))
    .expect("refs");
    secrets
        .create(&PostParams::default(), &s2)
        .await
        .expect("secret");
    let gone = kc
        .delete("k2", &DeleteParams::orphan())
        .await
        .expect("delete");
    assert!(gone.is_right(), "immediate deletion answers a Status");
    let orphan = secrets.get("s2").await.expect("orphaned dependent kept");
    assert!(
        orphan.owner_references().is_empty(),
        "owner reference stripped"
    );
    // No new finalizer may be added to an object being deleted; releasing it runs a
    // collection that still leaves the orphan alone.
    let mut k3 = kata("k3");
    k3.metadata.finalizers = Some(vec!["a/one".into()]);
    kc.create(&PostParams::default(), &k3)
        .await
        .expect("create");
    kc.delete("k3", &DeleteParams::default())
        .await
        .expect("delete");
    let refused = kc
        .patch(
            "k3",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["a/one", "b/two"]}})),
        )
        .await
        .expect_err("new finalizer while deleting");
    match refused {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(
                s.message.contains("no new finalizers can be added"),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    kc.patch(
        "k3",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release k3");
    assert!(kc.get_opt("k3").await.expect("get").is_none());
    assert!(
        secrets.get_opt("s2").await.expect("get").is_some(),
        "orphan survives later GC"
    );
}

async fn next_event(
    s: &mut futures::stream::BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>>,
) -> watcher::Event<ConfigMap> {
    s.try_next().await.expect("watch ok").expect("not ended")
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_and_survives_closed_watches() {
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    fake.insert(&cm("pre", json!({})));
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    // Initial list.
    let mut init = Vec::new();
    loop {
        match stream.try_next().await.expect("watch").expect("event") {
            watcher::Event::InitApply(o) => init.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(init, ["pre"]);
    api.create(&PostParams::default(), &cm("w", json!({})))
        .await
        .expect("create");
    assert!(
        matches!(next_event(&mut stream).await, watcher::Event::Apply(o) if o.name_any() == "w")
    );
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .expect("patch");
    match next_event(&mut stream).await {
        watcher::Event::Apply(o) => assert_eq!(o.data.expect("data")["k"], "changed"),
        other => panic!("expected modification, got {other:?}"),
    }
    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        matches!(next_event(&mut stream).await, watcher::Event::Delete(o) if o.name_any() == "w")
    );

    // Closing the watch makes the watcher re-watch; a change made after that still arrives.
    let watches_before = fake.requests().iter().filter(|r| r.verb == "watch").count();
    fake.inject(Fault::any(FaultKind::CloseWatches, 1));
    let watch_count = || fake.requests().iter().filter(|r| r.verb == "watch").count();
    let poll = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(Some(e)) = stream.try_next().await {
            let done = matches!(&e, watcher::Event::Apply(o) if o.name_any() == "after-close");
            events.push(e);
            if done {
                break;
            }
        }
        events
    });
    eventually("watcher re-watches after close", || {
        watch_count() > watches_before
    })
    .await;
    api.create(&PostParams::default(), &cm("after-close", json!({})))
        .await
        .expect("create");
    let events = poll.await.expect("join");
    assert!(
        matches!(events.last(), Some(watcher::Event::Apply(o)) if o.name_any() == "after-close")
    );
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_expires_old_ones() {
    use kube::api::{WatchEvent, WatchParams};
    let fake = FakeApi::with_history(3);
    fake.operator_as_admin();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect("create");
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    api.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .expect("create");
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    // Changes made after the list are replayed in order.
    let mut s = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .boxed();
    match s.try_next().await.expect("ok").expect("event") {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("expected ADDED b, got {other:?}"),
    }
    match s.try_next().await.expect("ok").expect("event") {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "a"),
        other => panic!("expected DELETED a, got {other:?}"),
    }
    // Push the list's resourceVersion out of the 3-change history: 410 Gone.
    for i in 0..4 {
        api.create(&PostParams::default(), &cm(&format!("x{i}"), json!({})))
            .await
            .expect("create");
    }
    let mut s = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .boxed();
    match s.try_next().await.expect("ok").expect("event") {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.contains("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn label_filtered_watch_turns_leaving_objects_into_deletes() {
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    api.create(&PostParams::default(), &cm("f", json!({"pick": "yes"})))
        .await
        .expect("create");
    let mut stream = watcher(api.clone(), watcher::Config::default().labels("pick=yes")).boxed();
    loop {
        if let watcher::Event::InitDone = stream.try_next().await.expect("ok").expect("event") {
            break;
        }
    }
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"pick": "no"}}})),
    )
    .await
    .expect("patch");
    let ev = stream.try_next().await.expect("ok").expect("event");
    assert!(matches!(ev, watcher::Event::Delete(o) if o.name_any() == "f"));
}

#[tokio::test]
async fn a_fault_for_one_client_leaves_other_clients_alone() {
    let fake = FakeApi::unrestricted();
    fake.insert(&cm("a", json!({})));
    let operator: Api<ConfigMap> = Api::namespaced(fake.client_as("operator"), "ns1");
    let sim: Api<ConfigMap> = Api::namespaced(fake.client_as("mco-sim"), "ns1");
    fake.inject(Fault::on("get", "configmaps", FaultKind::Status(500), 1).from_client("operator"));
    // The other client's request does not take the fault...
    sim.get("a").await.expect("another client is not failed");
    // ...so it is still there for the one it names.
    assert_eq!(
        api_code(operator.get("a").await.expect_err("500")),
        (500, "InternalError".into())
    );
    operator.get("a").await.expect("the fault was used once");
}

#[tokio::test]
async fn injected_faults_fail_the_next_matching_requests_only() {
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    fake.insert(&cm("a", json!({})));
    fake.inject(Fault::on("get", "configmaps", FaultKind::Status(500), 1));
    assert_eq!(
        api_code(api.get("a").await.expect_err("500")),
        (500, "InternalError".into())
    );
    api.get("a").await.expect("second get succeeds");

    fake.inject(Fault::on("patch", "configmaps", FaultKind::Status(429), 2));
    // Other verbs are untouched.
    api.get("a").await.expect("get unaffected");
    for _ in 0..2 {
        let e = api
            .patch("a", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .expect_err("429");
        assert_eq!(api_code(e), (429, "TooManyRequests".into()));
    }
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({})))
        .await
        .expect("third patch ok");

    // 429 carries Retry-After, as clients back off on it.
    fake.inject(Fault::any(FaultKind::Status(429), 1));
    let resp = tower::ServiceExt::oneshot(
        RawSvc(fake.clone()),
        http::Request::get("/api/v1/namespaces/ns1/configmaps/a")
            .body(kube::client::Body::empty())
            .expect("req"),
    )
    .await
    .expect("infallible");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");

    // "resource/sub" faults hit only the subresource.
    let kc: Api<KataConfig> = Api::all(fake.client());
    kc.create(&PostParams::default(), &kata("k"))
        .await
        .expect("create");
    fake.inject(Fault::on(
        "patch",
        "kataconfigs/status",
        FaultKind::Status(503),
        1,
    ));
    kc.patch(
        "k",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .expect("main resource unaffected");
    let e = kc
        .patch_status(
            "k",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await
        .expect_err("503");
    assert_eq!(api_code(e), (503, "ServiceUnavailable".into()));

    fake.inject(Fault::any(FaultKind::Timeout(Duration::from_millis(5)), 1));
    assert_eq!(
        api_code(api.get("a").await.expect_err("timeout")),
        (504, "Timeout".into())
    );

    // Faults not used up yet can be dropped at once.
    fake.inject(Fault::on("get", "configmaps", FaultKind::Status(503), 1000));
    api.get("a").await.expect_err("503");
    fake.clear_faults();
    api.get("a").await.expect("cleared");
}

/// Lets a test see raw responses (headers) through the fake's public client only.
#[derive(Clone)]
struct RawSvc(FakeApi);

impl tower::Service<http::Request<kube::client::Body>> for RawSvc {
    type Response = http::Response<testkit::fake_api::FakeBody>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let fake = self.0.clone();
        Box::pin(async move { Ok(fake.serve(req, "raw").await) })
    }
}

#[tokio::test]
async fn request_log_records_verbs_resources_and_writes() {
    let fake = FakeApi::unrestricted();
    let client = fake.client();
    let kc: Api<KataConfig> = Api::all(client.clone());
    kc.create(&PostParams::default(), &kata("k"))
        .await
        .expect("create");
    kc.get("k").await.expect("get");
    kc.list(&ListParams::default()).await.expect("list");
    let status = json!({"apiVersion": "kataconfiguration.openshift.io/v1", "kind": "KataConfig", "metadata": {"name": "k"}, "status": {}});
    kc.patch_status(
        "k",
        &PatchParams::apply("me").force(),
        &Patch::Apply(status),
    )
    .await
    .expect("status");
    kc.delete("k", &DeleteParams::default())
        .await
        .expect("delete");
    let log = fake.requests();
    let verbs: Vec<&str> = log.iter().map(|r| r.verb.as_str()).collect();
    assert_eq!(verbs, ["create", "get", "list", "patch", "delete"]);
    assert!(
        log.iter()
            .all(|r| r.group == "kataconfiguration.openshift.io" && r.resource == "kataconfigs")
    );
    assert_eq!(log[3].subresource.as_deref(), Some("status"));
    assert_eq!(log[3].patch_type.as_deref(), Some("apply"));
    assert_eq!(log[3].field_manager.as_deref(), Some("me"));
    assert_eq!(log[0].patch_type, None);
    assert_eq!(log[1].name.as_deref(), Some("k"));
    assert_eq!(fake.write_count(), 3);
    assert_eq!(fake.write_count_by("operator"), 3);
    assert_eq!(fake.write_count_by("mco-sim"), 0);
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn typed_and_json_test_hooks_see_the_same_store() {
    let fake = FakeApi::unrestricted();
    fake.insert(&kata("k"));
    fake.insert_json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b"}}}));
    assert!(fake.get::<KataConfig>("k").is_some());
    assert_eq!(fake.get::<Node>("n1").expect("node").labels()["a"], "b");
    assert!(fake.get_json("v1", "nodes", None, "n1").is_some());
    fake.insert(&cm("c", json!({})));
    assert!(fake.get_ns::<ConfigMap>("ns1", "c").is_some());
    assert_eq!(fake.list_json("v1", "configmaps", Some("ns1")).len(), 1);
    assert_eq!(fake.list::<Node>().len(), 1);
    // Metadata-only reads (PartialObjectMetadata) deserialize from the full objects.
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    assert_eq!(
        cms.get_metadata("c")
            .await
            .expect("metadata")
            .metadata
            .name
            .as_deref(),
        Some("c")
    );
    assert_eq!(
        cms.list_metadata(&ListParams::default())
            .await
            .expect("metadata list")
            .items
            .len(),
        1
    );
    assert!(fake.delete("v1", "nodes", None, "n1"));
    assert!(!fake.delete("v1", "nodes", None, "n1"));
    let nodes: Api<Node> = Api::all(fake.client());
    assert!(nodes.get_opt("n1").await.expect("get").is_none());
}

#[tokio::test]
async fn token_and_access_reviews_answer_from_the_callbacks() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let fake = FakeApi::unrestricted();
    fake.set_token_reviewer(|t| {
        (t == "good").then(|| testkit::ReviewUser {
            username: "prom".into(),
            uid: "1".into(),
            groups: vec!["g".into()],
        })
    });
    fake.set_access_reviewer(|r| {
        r.user == "prom" && r.verb == "get" && r.path.as_deref() == Some("/metrics")
    });
    let tr: Api<TokenReview> = Api::all(fake.client());
    let review = |token: &str| -> TokenReview {
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": {"token": token}})).expect("tr")
    };
    let ok = tr
        .create(&PostParams::default(), &review("good"))
        .await
        .expect("review");
    let st = ok.status.expect("status");
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(st.user.and_then(|u| u.username).as_deref(), Some("prom"));
    let bad = tr
        .create(&PostParams::default(), &review("bad"))
        .await
        .expect("review");
    assert_eq!(bad.status.expect("status").authenticated, Some(false));

    let sar: Api<SubjectAccessReview> = Api::all(fake.client());
    let ask = |path: &str| -> SubjectAccessReview {
        serde_json::from_value(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {}, "spec": {"user": "prom", "nonResourceAttributes": {"path": path, "verb": "get"}}})).expect("sar")
    };
    assert!(
        sar.create(&PostParams::default(), &ask("/metrics"))
            .await
            .expect("sar")
            .status
            .expect("status")
            .allowed
    );
    assert!(
        !sar.create(&PostParams::default(), &ask("/other"))
            .await
            .expect("sar")
            .status
            .expect("status")
            .allowed
    );
    let e = tr.get("x").await.expect_err("create-only");
    assert_eq!(api_code(e), (405, "MethodNotAllowed".into()));
}

#[tokio::test]
async fn unknown_resources_are_not_found_and_crds_register_new_ones() {
    let fake = FakeApi::unrestricted();
    let client = fake.client();
    let widgets = kube::core::ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: Api<kube::core::DynamicObject> = Api::all_with(client.clone(), &widgets);
    let e = api.list(&ListParams::default()).await.expect_err("unknown");
    assert_eq!(api_code(e).0, 404);
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]},
    }))
    .expect("crd");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("crd");
    assert!(
        api.list(&ListParams::default())
            .await
            .expect("served now")
            .items
            .is_empty()
    );
}

/// kube's own Controller and finalizer helper (JSON patch with a `test` op) run against the fake.
#[tokio::test]
async fn kube_controller_with_finalizer_helper_runs_against_the_fake() {
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    use std::sync::Arc;
    let fake = FakeApi::unrestricted();
    let api: Api<KataConfig> = Api::all(fake.client());
    let cancel = tokio_util::sync::CancellationToken::new();
    let reconcile = |obj: Arc<KataConfig>, api: Arc<Api<KataConfig>>| async move {
        finalizer(&api, "kataconfiguration.openshift.io/finalizer", obj, |ev| async {
            match ev {
                Finalizer::Apply(o) => {
                    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
                    api.patch_status(&o.name_any(), &PatchParams::default(), &Patch::Merge(status)).await?;
                    Ok(Action::await_change())
                }
                Finalizer::Cleanup(_) => Ok::<_, kube::Error>(Action::await_change()),
            }
        })
        .await
    };
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .graceful_shutdown_on(cancel.clone().cancelled_owned())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(50)),
            Arc::new(api.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    api.create(&PostParams::default(), &kata("example"))
        .await
        .expect("create");
    eventually("finalizer added and status written", || {
        fake.get::<KataConfig>("example")
            .is_some_and(|k| k.finalizers().len() == 1 && k.status.is_some())
    })
    .await;
    api.delete("example", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("finalizer removed, object gone", || {
        fake.get::<KataConfig>("example").is_none()
    })
    .await;
    cancel.cancel();
    task.await.expect("controller ends");
}

async fn raw(
    fake: &FakeApi,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request");
    let resp = fake.serve(req, "raw").await;
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_requests_get_real_status_bodies_naming_the_problem() {
    let fake = FakeApi::unrestricted();
    fake.insert(&cm("a", json!({})));
    let cms = "/api/v1/namespaces/ns1/configmaps";
    let json_ct = "application/json";
    let merge = "application/merge-patch+json";
    let cases: Vec<(&str, String, &str, &str, u16, &str, &str)> = vec![
        (
            "GET",
            "/apis/example.com/v1/widgets".into(),
            json_ct,
            "",
            404,
            "NotFound",
            "could not find the requested resource",
        ),
        (
            "GET",
            "/api/v1/configmaps/a".into(),
            json_ct,
            "",
            404,
            "NotFound",
            "configmaps is namespaced",
        ),
        (
            "PUT",
            cms.into(),
            json_ct,
            "{}",
            405,
            "MethodNotAllowed",
            "PUT is not supported",
        ),
        (
            "GET",
            format!("{cms}?labelSelector=app%20in%20x"),
            json_ct,
            "",
            400,
            "BadRequest",
            "needs parentheses",
        ),
        (
            "POST",
            cms.into(),
            json_ct,
            "[1,2",
            400,
            "BadRequest",
            "not valid JSON or YAML",
        ),
        (
            "POST",
            cms.into(),
            json_ct,
            r#"{"metadata":{}}"#,
            422,
            "Invalid",
            "name or generateName is required",
        ),
        (
            "POST",
            "/api/v1/configmaps".into(),
            json_ct,
            r#"{"metadata":{"name":"x"}}"#,
            400,
            "BadRequest",
            "POST to /namespaces/<ns>/configmaps",
        ),
        (
            "POST",
            cms.into(),
            json_ct,
            r#"{"metadata":{"name":"a"}}"#,
            409,
            "AlreadyExists",
            "\"a\" already exists",
        ),
        (
            "PUT",
            format!("{cms}/a"),
            json_ct,
            r#"{"metadata":{"name":"b"}}"#,
            400,
            "BadRequest",
            "does not match the name on the URL",
        ),
        (
            "PUT",
            format!("{cms}/zz"),
            json_ct,
            r#"{"metadata":{"name":"zz"}}"#,
            404,
            "NotFound",
            "configmaps \"zz\" not found",
        ),
        (
            "PATCH",
            format!("{cms}/a/scale"),
            merge,
            "{}",
            404,
            "NotFound",
            "no subresource scale",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "text/plain",
            "{}",
            415,
            "UnsupportedMediaType",
            "unknown format: text/plain",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "application/json-patch+json",
            "{}",
            400,
            "BadRequest",
            "invalid JSON patch",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            merge,
            r#"{"metadata":{"resourceVersion":"999"}}"#,
            409,
            "Conflict",
            "the object has been modified",
        ),
        (
            "DELETE",
            format!("{cms}/a"),
            json_ct,
            r#"{"preconditions":{"resourceVersion":"999"}}"#,
            409,
            "Conflict",
            "Precondition failed: ResourceVersion",
        ),
        (
            "DELETE",
            format!("{cms}/zz"),
            json_ct,
            "",
            404,
            "NotFound",
            "configmaps \"zz\" not found",
        ),
        (
            "PATCH",
            "/apis/kataconfiguration.openshift.io/v1/kataconfigs/k/status".into(),
            "application/apply-patch+yaml",
            r#"{"status":{}}"#,
            404,
            "NotFound",
            "kataconfigs.kataconfiguration.openshift.io \"k\" not found",
        ),
    ];
    for (method, uri, ct, body, code, reason, message) in cases {
        let (got, status) = raw(&fake, method, &uri, ct, body).await;
        assert_eq!(got, code, "{method} {uri}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {uri}");
        assert_eq!(status["code"], code, "{method} {uri}");
        assert_eq!(status["reason"], reason, "{method} {uri}: {status}");
        let text = status["message"].as_str().unwrap_or("");
        assert!(
            text.contains(message),
            "{method} {uri}: {text:?} should mention {message:?}"
        );
    }
    // What does work on the same paths.
    let (code, made) = raw(
        &fake,
        "POST",
        cms,
        json_ct,
        r#"{"metadata":{"generateName":"gen-"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    assert!(
        made["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("gen-") && n.len() > 4)
    );
    let (code, version) = raw(&fake, "GET", "/version", json_ct, "").await;
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
    let (code, _) = raw(
        &fake,
        "POST",
        cms,
        json_ct,
        r#"{"metadata":{"name":"dry"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = raw(
        &fake,
        "POST",
        &format!("{cms}?dryRun=All"),
        json_ct,
        r#"{"metadata":{"name":"dry2"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    assert!(
        fake.get_ns::<ConfigMap>("ns1", "dry2").is_none(),
        "dry run stores nothing"
    );
}

#[tokio::test]
async fn streaming_list_watcher_and_strategic_merge_work() {
    let fake = FakeApi::unrestricted();
    fake.insert(&cm("one", json!({})));
    fake.insert(&cm("two", json!({})));
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut init = Vec::new();
    loop {
        match stream.try_next().await.expect("ok").expect("event") {
            watcher::Event::InitApply(o) => init.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(init, ["one", "two"]);
    let initial_watch = fake.requests().into_iter().find(|r| r.verb == "watch");
    assert!(
        initial_watch.is_some(),
        "streaming lists start with a watch, not a list"
    );
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Strategic(json!({"data": {"s": "1"}})),
    )
    .await
    .expect("strategic merge");
    match stream.try_next().await.expect("ok").expect("event") {
        watcher::Event::Apply(o) => assert_eq!(o.data.expect("data")["s"], "1"),
        other => panic!("expected the patched object, got {other:?}"),
    }
    let log = fake.requests();
    assert_eq!(
        log.last().and_then(|r| r.patch_type.clone()).as_deref(),
        Some("strategic")
    );
}

/// Discovery answers from what is served now: the operator's own probe (as its ServiceAccount,
/// through the bootstrap `system:discovery` role) sees groups taken away and CRDs installed.
#[tokio::test]
async fn discovery_follows_what_is_served() {
    use sandboxed_containers_operator::discovery::{ServedApis, probe};
    let fake = FakeApi::new();
    let operator = fake.client();
    assert_eq!(
        probe(&operator).await.expect("probe"),
        ServedApis {
            validating_admission_policy: true,
            machine_config: true,
            monitoring: false,
        }
    );
    let resources = operator
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await
        .expect("resource list");
    assert!(
        resources
            .resources
            .iter()
            .any(|r| r.name == "validatingadmissionpolicies/status")
    );
    // A vanilla cluster without the MCO, and an API server without ValidatingAdmissionPolicy.
    fake.unserve_group("machineconfiguration.openshift.io");
    fake.unserve(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
    );
    assert_eq!(
        probe(&operator).await.expect("probe"),
        ServedApis::default()
    );
    let e = Api::<sandboxed_containers_operator::api::MachineConfig>::all(operator.clone())
        .list(&ListParams::default())
        .await
        .expect_err("no longer served");
    assert_eq!(api_code(e).0, 404);
    // prometheus-operator installed later: its CRDs make monitoring.coreos.com/v1 served.
    for (plural, kind) in [
        ("servicemonitors", "ServiceMonitor"),
        ("prometheusrules", "PrometheusRule"),
    ] {
        fake.insert_json(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                     "names": {"plural": plural, "kind": kind},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
        }));
    }
    assert!(probe(&operator).await.expect("probe").monitoring);
    fake.delete(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        None,
        "prometheusrules.monitoring.coreos.com",
    );
    assert!(
        !probe(&operator).await.expect("probe").monitoring,
        "CRD deleted"
    );
}

/// The operator's shared cache keeps the discovery answer and announces when it changes.
#[tokio::test]
async fn the_cluster_cache_follows_discovery() {
    use sandboxed_containers_operator::cache::{Change, ClusterCache};
    use sandboxed_containers_operator::observability::Metrics;
    let fake = FakeApi::new();
    fake.unserve_group("monitoring.coreos.com");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cache = ClusterCache::start_with(
        fake.client(),
        std::sync::Arc::new(Metrics::new()),
        Duration::from_millis(20),
        shutdown.clone(),
    );
    let first = cache.served_apis_ready().await.expect("answered");
    assert!(first.machine_config && !first.monitoring);
    let mut changes = cache.subscribe();
    fake.unserve_group("machineconfiguration.openshift.io");
    let change = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Change::ServedApis) = changes.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(change.is_ok(), "the change was announced");
    assert!(!cache.served_apis().expect("known").machine_config);
    shutdown.cancel();
}

#[tokio::test]
async fn an_unreachable_server_refuses_connections_cuts_watches_and_comes_back_intact() {
    use kube::api::WatchParams;
    let fake = FakeApi::unrestricted();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns1");
    let admin: Api<ConfigMap> = Api::namespaced(fake.client_as("admin"), "ns1");
    api.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .expect("create");
    let mut raw = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("raw watch")
        .boxed();
    let first = raw.try_next().await.expect("event").expect("not ended");
    assert!(matches!(first, kube::api::WatchEvent::Added(o) if o.name_any() == "before"));
    fake.clear_requests();

    fake.set_unreachable(true);
    assert!(fake.is_unreachable());
    // An open watch is cut off with a connection error, not ended cleanly.
    let cut = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match raw.try_next().await {
                Ok(Some(kube::api::WatchEvent::Bookmark(_))) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the watch notices at once");
    assert!(cut.is_err(), "a severed watch errors: {cut:?}");
    // Every client, the operator's and an admin's, gets a connection-level error: no API answer.
    for e in [
        api.get("before").await.expect_err("down"),
        admin
            .create(&PostParams::default(), &cm("during", json!({})))
            .await
            .expect_err("down"),
    ] {
        assert!(
            !matches!(e, kube::Error::Api(_)),
            "a transport error, not an API answer: {e:?}"
        );
        let text = format!("{e:?}");
        assert!(
            text.contains("connection refused: the in-memory API server is unreachable"),
            "{text}"
        );
    }
    // The refused requests are logged as refused, the write counted as attempted.
    let log = fake.requests();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log.iter().all(|r| r.refused && !r.forbidden));
    assert_eq!(
        (log[0].verb.as_str(), log[0].client.as_str()),
        ("get", "operator")
    );
    assert_eq!(
        (log[1].verb.as_str(), log[1].client.as_str()),
        ("create", "admin")
    );
    assert_eq!(fake.write_count_by("admin"), 1);
    // Nothing changed behind the outage; the test hooks still read the store.
    assert!(fake.get_ns::<ConfigMap>("ns1", "before").is_some());
    assert!(fake.get_ns::<ConfigMap>("ns1", "during").is_none());

    // Back up: requests succeed again and a watcher started during the outage catches up.
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    let seen = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                && o.name_any() == "after"
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.set_unreachable(false);
    assert!(!fake.is_unreachable());
    assert_eq!(
        api.get("before").await.expect("reachable").name_any(),
        "before"
    );
    api.create(&PostParams::default(), &cm("after", json!({})))
        .await
        .expect("create after the outage");
    tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .expect("the watcher reconnected and saw the new object")
        .expect("join");
}
