//! The metrics and health endpoints over real sockets on 127.0.0.1, the kube-backed authorizer
//! against a mocked API server, the shutdown signal, and the guarantee that bearer tokens never
//! reach the logs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use sandboxed_containers_operator::api::KataNodesStatus;
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::observability::{
    AccessDecision, AuthError, Authorizer, BearerToken, CachedAuthorizer, KubeAuthorizer,
    MetricsSecurity, UserInfo, kube_authorizer, serve_health, serve_metrics, shutdown_on_signal,
};
use sandboxed_containers_operator::observability::{Liveness, Readiness};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// Every bearer token used in this binary; none may ever appear in the captured logs.
const ALLOWED_TOKEN: &str = "tok-allowed-3f9c1e7a5b";
const FORBIDDEN_TOKEN: &str = "tok-forbidden-8d2e4b6c1a";
const UNKNOWN_TOKEN: &str = "tok-unknown-5a7b9c2d4e";
const BROKEN_TOKEN: &str = "tok-broken-1c3e5a7b9d";
const OTHER_ALLOWED_TOKEN: &str = "tok-other-allowed-6e8a0c2f4b";
const KUBE_TOKEN: &str = "tok-kube-sa-2b4d6f8a0c";
const ALL_TOKENS: [&str; 6] = [
    ALLOWED_TOKEN,
    FORBIDDEN_TOKEN,
    UNKNOWN_TOKEN,
    BROKEN_TOKEN,
    OTHER_ALLOWED_TOKEN,
    KUBE_TOKEN,
];

const PROMETHEUS_USER: &str = "system:serviceaccount:openshift-monitoring:prometheus-k8s";

// ---------------------------------------------------------------------------------------------
// Log capture: one global subscriber for the whole binary, so every test's logs are checked.

const LOG_FILTER: &str = "sandboxed_containers_operator=trace,kube=trace,kube_client=trace,warn";

fn captured_logs() -> testkit::logs::LogBuffer {
    testkit::logs::capture(LOG_FILTER)
}

fn logs_text() -> String {
    captured_logs().text()
}

// ---------------------------------------------------------------------------------------------
// TLS material: a CA and a serving certificate for 127.0.0.1 signed by it.

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "observability test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&leaf_key, &ca).expect("leaf certificate");

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).expect("signing key");
    let certified = CertifiedKey::new(vec![cert.der().clone(), ca.der().clone()], signing);
    let resolver = Arc::new(SingleCertAndKey::from(certified));
    Pki {
        ca_pem: ca.pem(),
        server: sandboxed_containers_operator::server::tls_config(resolver),
    }
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem"))
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------------
// In-memory authorizer: a fixed table of tokens, counting how often it is asked.

struct InMemoryAuthorizer {
    /// token → (user, may get /metrics)
    tokens: HashMap<&'static str, (UserInfo, bool)>,
    calls: AtomicUsize,
}

impl InMemoryAuthorizer {
    fn new() -> Self {
        let tokens = HashMap::from([
            (ALLOWED_TOKEN, (UserInfo::named(PROMETHEUS_USER), true)),
            (
                OTHER_ALLOWED_TOKEN,
                (UserInfo::named("other-scraper"), true),
            ),
            (
                FORBIDDEN_TOKEN,
                (
                    UserInfo::named("system:serviceaccount:default:default"),
                    false,
                ),
            ),
        ]);
        Self {
            tokens,
            calls: AtomicUsize::new(0),
        }
    }
}

impl Authorizer for InMemoryAuthorizer {
    fn review<'a>(
        &'a self,
        token: &'a BearerToken,
    ) -> BoxFuture<'a, Result<AccessDecision, AuthError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if token.secret() == BROKEN_TOKEN {
                return Err(AuthError::TokenReview(
                    "Post \"https://api:6443\": connection refused".into(),
                ));
            }
            Ok(match self.tokens.get(token.secret()) {
                Some((user, true)) => AccessDecision::Allowed { user: user.clone() },
                Some((user, false)) => AccessDecision::Forbidden {
                    user: user.clone(),
                    reason: "no RBAC policy matched".into(),
                },
                None => AccessDecision::Unauthenticated {
                    reason: "the API server rejected the token: invalid bearer token".into(),
                },
            })
        })
    }
}

/// Delegates to a shared `InMemoryAuthorizer` so the test keeps a handle on its call count.
struct Shared(Arc<InMemoryAuthorizer>);

impl Authorizer for Shared {
    fn review<'a>(
        &'a self,
        token: &'a BearerToken,
    ) -> BoxFuture<'a, Result<AccessDecision, AuthError>> {
        self.0.review(token)
    }
}

// ---------------------------------------------------------------------------------------------
// Servers.

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("server ends cleanly");
    }
}

async fn start_metrics(metrics: Arc<Metrics>, security: MetricsSecurity) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_metrics(listener, metrics, security, shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

/// A secure server whose authorizer is `CachedAuthorizer(InMemoryAuthorizer)`.
async fn start_secure(
    metrics: Arc<Metrics>,
) -> (Running, Arc<InMemoryAuthorizer>, reqwest::Client) {
    let pki = pki();
    let authorizer = Arc::new(InMemoryAuthorizer::new());
    let cached = CachedAuthorizer::new(Shared(authorizer.clone()), Duration::from_secs(60));
    let running = start_metrics(
        metrics,
        MetricsSecurity::Secure {
            tls: pki.server,
            authorizer: Arc::new(cached),
        },
    )
    .await;
    (running, authorizer, https_client(&pki.ca_pem))
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    (status, headers, body)
}

fn metrics_url(addr: SocketAddr, scheme: &str) -> String {
    format!("{scheme}://{addr}/metrics")
}

fn assert_one_line(body: &str) {
    assert!(body.ends_with('\n'), "{body:?}");
    assert_eq!(
        body.trim_end().lines().count(),
        1,
        "one-line reason: {body:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Secure endpoint.

#[tokio::test]
async fn secure_metrics_without_a_token_is_401_with_a_reason() {
    captured_logs();
    let (server, authorizer, client) = start_secure(Arc::new(Metrics::new())).await;
    let (status, headers, body) = get(&client, &metrics_url(server.addr, "https"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(
        body,
        "unauthorized: no bearer token: send the header `Authorization: Bearer <token>`\n"
    );
    assert_one_line(&body);
    assert_eq!(
        authorizer.calls.load(Ordering::SeqCst),
        0,
        "nothing to review"
    );

    let response = client
        .get(metrics_url(server.addr, "https"))
        .basic_auth("admin", Some("password"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.text().await.expect("body"),
        "unauthorized: the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn secure_metrics_with_an_unknown_token_is_401() {
    captured_logs();
    let (server, _, client) = start_secure(Arc::new(Metrics::new())).await;
    let (status, _, body) = get(
        &client,
        &metrics_url(server.addr, "https"),
        Some(UNKNOWN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        "unauthorized: the API server rejected the token: invalid bearer token\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn secure_metrics_without_permission_is_403_naming_user_and_permission() {
    captured_logs();
    let (server, _, client) = start_secure(Arc::new(Metrics::new())).await;
    let (status, _, body) = get(
        &client,
        &metrics_url(server.addr, "https"),
        Some(FORBIDDEN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "forbidden: user \"system:serviceaccount:default:default\" may not get the non-resource URL \
         /metrics (needs RBAC nonResourceURLs [\"/metrics\"] verbs [\"get\"]): no RBAC policy matched\n"
    );
    assert_one_line(&body);
    assert!(
        !body.contains("kata_operator"),
        "no metrics leak in a denial"
    );
    server.stop().await;
}

#[tokio::test]
async fn secure_metrics_with_permission_serves_the_exposition() {
    captured_logs();
    let (server, _, client) = start_secure(Arc::new(Metrics::new())).await;
    let (status, headers, body) = get(
        &client,
        &metrics_url(server.addr, "https"),
        Some(ALLOWED_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let version_line = format!(
        "kata_operator_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.lines().any(|l| l == version_line), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn review_errors_are_500_and_retried_on_the_next_request() {
    captured_logs();
    let (server, authorizer, client) = start_secure(Arc::new(Metrics::new())).await;
    for expected_calls in [1, 2] {
        let (status, _, body) = get(
            &client,
            &metrics_url(server.addr, "https"),
            Some(BROKEN_TOKEN),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            "could not check the bearer token: TokenReview failed: Post \"https://api:6443\": connection refused\n"
        );
        assert_eq!(authorizer.calls.load(Ordering::SeqCst), expected_calls);
    }
    server.stop().await;
}

#[tokio::test]
async fn decisions_are_cached_per_token() {
    captured_logs();
    let (server, authorizer, client) = start_secure(Arc::new(Metrics::new())).await;
    let url = metrics_url(server.addr, "https");
    let calls = || authorizer.calls.load(Ordering::SeqCst);

    assert_eq!(
        get(&client, &url, Some(ALLOWED_TOKEN)).await.0,
        StatusCode::OK
    );
    assert_eq!(calls(), 1);
    assert_eq!(
        get(&client, &url, Some(ALLOWED_TOKEN)).await.0,
        StatusCode::OK
    );
    assert_eq!(calls(), 1, "same token: answered from the cache");
    assert_eq!(
        get(&client, &url, Some(OTHER_ALLOWED_TOKEN)).await.0,
        StatusCode::OK
    );
    assert_eq!(calls(), 2, "a different token is reviewed");
    assert_eq!(
        get(&client, &url, Some(FORBIDDEN_TOKEN)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&client, &url, Some(FORBIDDEN_TOKEN)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(calls(), 3, "denials are cached too");
    server.stop().await;
}

#[tokio::test]
async fn secure_port_does_not_answer_plain_http() {
    captured_logs();
    let (server, authorizer, _) = start_secure(Arc::new(Metrics::new())).await;
    let plain = reqwest::Client::new();
    let result = plain
        .get(metrics_url(server.addr, "http"))
        .bearer_auth(ALLOWED_TOKEN)
        .send()
        .await;
    assert!(
        result.is_err(),
        "plain HTTP must fail the TLS handshake: {result:?}"
    );
    assert_eq!(authorizer.calls.load(Ordering::SeqCst), 0);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Insecure mode and the exposition itself.

#[tokio::test]
async fn insecure_mode_serves_plain_http_without_auth() {
    captured_logs();
    let server = start_metrics(Arc::new(Metrics::new()), MetricsSecurity::Insecure).await;
    let client = reqwest::Client::new();
    let (status, headers, body) = get(&client, &metrics_url(server.addr, "http"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        body.contains("# TYPE kata_config_installation_success gauge"),
        "{body}"
    );
    let (status, _, _) = get(
        &client,
        &metrics_url(server.addr, "http"),
        Some(UNKNOWN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "tokens are ignored, not checked");
    let (status, _, _) = get(&client, &format!("http://{}/other", server.addr), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn scrape_shows_exact_series_and_values() {
    captured_logs();
    let metrics = Arc::new(Metrics::new());
    metrics.set_nodes(&KataNodesStatus {
        installed: vec!["worker-0".into(), "worker-1".into(), "worker-2".into()],
        installing: vec!["worker-3".into()],
        ..Default::default()
    });
    metrics.installation_success.set(0.0);
    metrics
        .reconciliations
        .with_label_values(&["success"])
        .inc();
    metrics
        .reconciliations
        .with_label_values(&["success"])
        .inc();
    metrics.reconciliations.with_label_values(&["error"]).inc();
    metrics.reconcile_duration.observe(0.02);
    metrics
        .admission_requests
        .with_label_values(&["mutate-pod", "CREATE", "mutated"])
        .inc();
    metrics
        .admission_duration
        .with_label_values(&["mutate-pod"])
        .observe(0.0003);
    metrics.leader.set(1);

    let (server, _, client) = start_secure(metrics).await;
    let (status, _, body) = get(
        &client,
        &metrics_url(server.addr, "https"),
        Some(ALLOWED_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = body.lines().collect();

    let version = env!("CARGO_PKG_VERSION");
    let expected = [
        "kata_config_installation_success 0".to_owned(),
        "kata_operator_nodes{state=\"installed\"} 3".to_owned(),
        "kata_operator_nodes{state=\"installing\"} 1".to_owned(),
        "kata_operator_nodes{state=\"waiting_to_install\"} 0".to_owned(),
        "kata_operator_nodes{state=\"failed_to_install\"} 0".to_owned(),
        "kata_operator_nodes{state=\"uninstalling\"} 0".to_owned(),
        "kata_operator_nodes{state=\"waiting_to_uninstall\"} 0".to_owned(),
        "kata_operator_nodes{state=\"failed_to_uninstall\"} 0".to_owned(),
        "kata_operator_reconciliations_total{result=\"success\"} 2".to_owned(),
        "kata_operator_reconciliations_total{result=\"error\"} 1".to_owned(),
        "kata_operator_reconcile_duration_seconds_bucket{le=\"0.01\"} 0".to_owned(),
        "kata_operator_reconcile_duration_seconds_bucket{le=\"0.025\"} 1".to_owned(),
        "kata_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1".to_owned(),
        "kata_operator_reconcile_duration_seconds_sum 0.02".to_owned(),
        "kata_operator_reconcile_duration_seconds_count 1".to_owned(),
        "kata_operator_admission_requests_total{operation=\"CREATE\",result=\"mutated\",webhook=\"mutate-pod\"} 1".to_owned(),
        "kata_operator_admission_duration_seconds_bucket{webhook=\"mutate-pod\",le=\"0.00025\"} 0".to_owned(),
        "kata_operator_admission_duration_seconds_bucket{webhook=\"mutate-pod\",le=\"0.0005\"} 1".to_owned(),
        "kata_operator_admission_duration_seconds_count{webhook=\"mutate-pod\"} 1".to_owned(),
        format!("kata_operator_build_info{{version=\"{version}\"}} 1"),
        "kata_operator_leader 1".to_owned(),
    ];
    for line in &expected {
        assert!(
            lines.contains(&line.as_str()),
            "missing series line {line:?} in\n{body}"
        );
    }

    // Exactly these series of the state-labelled families, nothing else.
    let node_series = lines
        .iter()
        .filter(|l| l.starts_with("kata_operator_nodes{"))
        .count();
    assert_eq!(node_series, 7, "{body}");
    let reconciliation_series = lines
        .iter()
        .filter(|l| l.starts_with("kata_operator_reconciliations_total{"))
        .count();
    assert_eq!(reconciliation_series, 2, "{body}");

    // Exactly the families of the contract (plus ours), with their types.
    let mut families: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    families.sort_unstable();
    assert_eq!(
        families,
        [
            "kata_config_installation_success gauge",
            "kata_operator_admission_duration_seconds histogram",
            "kata_operator_admission_requests_total counter",
            "kata_operator_build_info gauge",
            "kata_operator_certificate_expiry_timestamp_seconds gauge",
            "kata_operator_leader gauge",
            "kata_operator_nodes gauge",
            "kata_operator_reconcile_duration_seconds histogram",
            "kata_operator_reconciliations_total counter",
        ],
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_server_stops_on_shutdown() {
    captured_logs();
    let server = start_metrics(Arc::new(Metrics::new()), MetricsSecurity::Insecure).await;
    let addr = server.addr;
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

// ---------------------------------------------------------------------------------------------
// Health.

#[tokio::test]
async fn readyz_lists_waiting_components_until_all_are_ready() {
    captured_logs();
    let readiness = Readiness::new();
    readiness.register("controller");
    readiness.register("webhook");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_health(
        listener,
        readiness.clone(),
        Liveness::new(),
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let healthz = format!("http://{addr}/healthz");
    let readyz = format!("http://{addr}/readyz");

    let (status, _, body) = get(&client, &healthz, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, body) = get(&client, &readyz, None).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for controller, webhook\n"
        )
    );
    readiness.set("controller", true);
    let (status, _, body) = get(&client, &readyz, None).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for webhook\n"
        )
    );
    readiness.set("webhook", true);
    let (status, _, body) = get(&client, &readyz, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, body) = get(&client, &healthz, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

    shutdown.cancel();
    task.await
        .expect("join")
        .expect("health server ends cleanly");
}

#[tokio::test]
async fn healthz_fails_naming_a_wedged_task_and_recovers_when_it_beats_again() {
    captured_logs();
    let liveness = Liveness::new();
    // Armed with a bound far below the polling below, so it is overdue almost at once.
    let stuck = liveness.heartbeat("controller", Duration::from_millis(20));
    let idle = liveness.heartbeat("leader-election", Duration::from_millis(20));
    idle.rest();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_health(
        listener,
        Readiness::new(),
        liveness.clone(),
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let healthz = format!("http://{addr}/healthz");
    let mut answer = get(&client, &healthz, None).await;
    for _ in 0..600 {
        if answer.0 != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = get(&client, &healthz, None).await;
    }
    let (status, _, body) = answer;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.starts_with("wedged: controller made no progress for ")
            && body.ends_with("s (bound 0.0s)\n"),
        "only the armed, silent task is named: {body:?}"
    );
    // Resting (idle by design) or gone is not wedged.
    stuck.rest();
    let (status, _, body) = get(&client, &healthz, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    drop(stuck);
    let (status, _, _) = get(&client, &healthz, None).await;
    assert_eq!(status, StatusCode::OK);
    shutdown.cancel();
    task.await
        .expect("join")
        .expect("health server ends cleanly");
}

// ---------------------------------------------------------------------------------------------
// The kube-backed authorizer against a mocked API server (ApiServerVerifier pattern).

type ApiHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (kube::Client, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Takes the next request, asserts it is `POST path` with exactly `expected` as body, answers
/// `answer` with `code`.
async fn expect_post(
    handle: &mut ApiHandle,
    path: &str,
    expected: Value,
    code: u16,
    answer: Value,
) {
    let (request, send) = handle
        .next_request()
        .await
        .expect("a request to the API server");
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri().path(), path);
    let body = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(body, expected);
    let response = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&answer).expect("answer")))
        .expect("response");
    send.send_response(response);
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn token_review_request() -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {},
        "spec": {"token": KUBE_TOKEN},
    })
}

fn prometheus_user() -> Value {
    json!({
        "username": PROMETHEUS_USER,
        "uid": "5b1f9c2e-0d3a-4c51-9d7e-2f4a6b8c0d1e",
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:openshift-monitoring",
            "system:authenticated",
        ],
        "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-k8s-0"]},
    })
}

fn authenticated_answer() -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {},
        "spec": {"token": KUBE_TOKEN},
        "status": {
            "authenticated": true,
            "user": prometheus_user(),
            "audiences": ["https://kubernetes.default.svc"],
        },
    })
}

fn access_review_request() -> Value {
    let user = prometheus_user();
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": {
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
            "user": user["username"],
            "uid": user["uid"],
            "groups": user["groups"],
            "extra": user["extra"],
        },
    })
}

fn access_review_answer(allowed: bool, reason: &str) -> Value {
    let mut answer = access_review_request();
    answer["status"] = json!({"allowed": allowed, "reason": reason});
    answer
}

fn expected_user() -> UserInfo {
    UserInfo {
        username: PROMETHEUS_USER.to_owned(),
        uid: "5b1f9c2e-0d3a-4c51-9d7e-2f4a6b8c0d1e".to_owned(),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:openshift-monitoring".to_owned(),
            "system:authenticated".to_owned(),
        ],
        extra: BTreeMap::from([(
            "authentication.kubernetes.io/pod-name".to_owned(),
            vec!["prometheus-k8s-0".to_owned()],
        )]),
    }
}

#[tokio::test]
async fn kube_authorizer_sends_token_review_then_subject_access_review() {
    captured_logs();
    let (client, mut handle) = mock_client();
    let verifier = tokio::spawn(async move {
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            authenticated_answer(),
        )
        .await;
        expect_post(
            &mut handle,
            ACCESS_REVIEWS,
            access_review_request(),
            201,
            access_review_answer(
                true,
                "RBAC: allowed by ClusterRoleBinding \"prometheus-k8s\"",
            ),
        )
        .await;
        // Dropping the handle makes any further API call fail.
    });
    let authorizer = kube_authorizer(client, Duration::from_secs(60));
    let token = BearerToken::new(KUBE_TOKEN);
    let decision = authorizer.review(&token).await.expect("review");
    assert_eq!(
        decision,
        AccessDecision::Allowed {
            user: expected_user()
        }
    );
    verifier.await.expect("verifier");
    // Cached: answered although the mocked API server is gone.
    assert_eq!(authorizer.review(&token).await.expect("cached"), decision);
}

#[tokio::test]
async fn kube_authorizer_reports_subject_access_review_denial() {
    captured_logs();
    let (client, mut handle) = mock_client();
    let verifier = tokio::spawn(async move {
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            authenticated_answer(),
        )
        .await;
        let mut answer = access_review_answer(false, "");
        answer["status"]["evaluationError"] = json!("no RBAC policy matched");
        expect_post(
            &mut handle,
            ACCESS_REVIEWS,
            access_review_request(),
            201,
            answer,
        )
        .await;
    });
    let decision = KubeAuthorizer::new(client)
        .review(&BearerToken::new(KUBE_TOKEN))
        .await
        .expect("review");
    verifier.await.expect("verifier");
    assert_eq!(
        decision,
        AccessDecision::Forbidden {
            user: expected_user(),
            reason: "no RBAC policy matched".into()
        }
    );
}

#[tokio::test]
async fn kube_authorizer_reports_unauthenticated_token_without_asking_for_access() {
    captured_logs();
    let (client, mut handle) = mock_client();
    let verifier = tokio::spawn(async move {
        let mut answer = token_review_request();
        answer["status"] = json!({
            "authenticated": false,
            "error": "[invalid bearer token, service account token has expired]",
        });
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            answer,
        )
        .await;
        // Dropping the handle: a SubjectAccessReview now would fail the review with an error.
    });
    let decision = KubeAuthorizer::new(client)
        .review(&BearerToken::new(KUBE_TOKEN))
        .await
        .expect("review");
    assert_eq!(
        decision,
        AccessDecision::Unauthenticated {
            reason: "the API server rejected the token: [invalid bearer token, service account token has expired]".into()
        }
    );
    verifier.await.expect("verifier");
}

#[tokio::test]
async fn kube_authorizer_without_status_or_user_is_an_error() {
    captured_logs();
    let (client, mut handle) = mock_client();
    let verifier = tokio::spawn(async move {
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            token_review_request(),
        )
        .await;
        let mut answer = token_review_request();
        answer["status"] = json!({"authenticated": true});
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            answer,
        )
        .await;
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            authenticated_answer(),
        )
        .await;
        expect_post(
            &mut handle,
            ACCESS_REVIEWS,
            access_review_request(),
            201,
            access_review_request(),
        )
        .await;
    });
    let authorizer = KubeAuthorizer::new(client);
    let token = BearerToken::new(KUBE_TOKEN);
    assert_eq!(
        authorizer.review(&token).await,
        Err(AuthError::TokenReview(
            "the API server answered without a status".into()
        ))
    );
    assert_eq!(
        authorizer.review(&token).await,
        Err(AuthError::TokenReview(
            "the API server authenticated the token but named no user".into()
        ))
    );
    assert_eq!(
        authorizer.review(&token).await,
        Err(AuthError::SubjectAccessReview(
            "the API server answered without a status".into()
        ))
    );
    verifier.await.expect("verifier");
}

#[tokio::test]
async fn kube_authorizer_surfaces_api_errors() {
    captured_logs();
    let (client, mut handle) = mock_client();
    let verifier = tokio::spawn(async move {
        let forbidden = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:openshift-sandboxed-containers-operator:controller-manager\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
            "reason": "Forbidden", "code": 403,
        });
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            403,
            forbidden,
        )
        .await;
        expect_post(
            &mut handle,
            TOKEN_REVIEWS,
            token_review_request(),
            201,
            authenticated_answer(),
        )
        .await;
        let unavailable = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server is currently unable to handle the request",
            "reason": "ServiceUnavailable", "code": 503,
        });
        expect_post(
            &mut handle,
            ACCESS_REVIEWS,
            access_review_request(),
            503,
            unavailable,
        )
        .await;
    });
    let authorizer = kube_authorizer(client, Duration::from_secs(60));
    let token = BearerToken::new(KUBE_TOKEN);
    assert_eq!(
        authorizer.review(&token).await,
        Err(AuthError::TokenReview(
            "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:openshift-sandboxed-containers-operator:controller-manager\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope (403 Forbidden)".into()
        ))
    );
    // Not cached: the next request reviews again.
    assert_eq!(
        authorizer.review(&token).await,
        Err(AuthError::SubjectAccessReview(
            "the server is currently unable to handle the request (503 ServiceUnavailable)".into()
        ))
    );
    verifier.await.expect("verifier");
}

// ---------------------------------------------------------------------------------------------
// Tokens never reach the logs.

#[tokio::test]
async fn logs_never_contain_a_bearer_token() {
    captured_logs();
    let (server, _, client) = start_secure(Arc::new(Metrics::new())).await;
    let url = metrics_url(server.addr, "https");
    for token in [ALLOWED_TOKEN, FORBIDDEN_TOKEN, UNKNOWN_TOKEN, BROKEN_TOKEN] {
        get(&client, &url, Some(token)).await;
    }
    get(&client, &url, None).await;
    server.stop().await;

    // The kube-backed path, with a failing API call.
    let (kube, mut handle) = mock_client();
    let verifier = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("request");
        send.send_error(std::io::Error::other("connection reset by peer"));
    });
    let error = KubeAuthorizer::new(kube)
        .review(&BearerToken::new(KUBE_TOKEN))
        .await
        .expect_err("transport error");
    assert!(
        error.to_string().starts_with("TokenReview failed: "),
        "{error}"
    );
    verifier.await.expect("verifier");

    let logs = logs_text();
    assert!(
        logs.contains("metrics request forbidden")
            && logs.contains("could not review a metrics request"),
        "the auth path was logged (capture works):\n{logs}"
    );
    for token in ALL_TOKENS {
        assert!(
            !logs.contains(token),
            "token {token} leaked into the logs:\n{logs}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shutdown signal. The only test in this binary that sends a signal.

#[tokio::test]
async fn sigterm_cancels_the_shutdown_token_and_every_child() {
    captured_logs();
    let token = shutdown_on_signal();
    let child = token.child_token();
    let clone = token.clone();
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(60), child.cancelled())
        .await
        .expect("SIGTERM cancels the token");
    assert!(clone.is_cancelled());
}

// ---------------------------------------------------------------------------------------------
// Logging set-up.

#[test]
fn init_logging_refuses_to_replace_an_installed_subscriber() {
    captured_logs();
    let err = sandboxed_containers_operator::observability::init_logging(
        sandboxed_containers_operator::cli::LogFormat::Json,
    )
    .expect_err("a global subscriber is already installed");
    assert!(
        err.to_string()
            .starts_with("cannot install the log subscriber: "),
        "{err}"
    );
}
