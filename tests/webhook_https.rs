//! The webhook server over real HTTPS on loopback, with certificates generated here: every
//! endpoint with the sample reviews over HTTP/1.1 and h2, malformed and oversize bodies, wrong
//! content type, TLS 1.2, and a certificate rotation while a client keeps connecting.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use rustls::pki_types::ServerName;
use sandboxed_containers_operator::cache::ClusterCache;
use sandboxed_containers_operator::certs::{CertStore, dir};
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::server::{serve, tls_config};
use sandboxed_containers_operator::webhook::{WebhookState, router};
use serde_json::Value;
use testkit::webhook_samples as samples;
use tokio_util::sync::CancellationToken;

/// Every log line of this test binary, to check that no key material is ever logged.
fn captured_logs() -> testkit::logs::LogBuffer {
    testkit::logs::capture("trace")
}

/// A test CA and serving certificates it signs for 127.0.0.1.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("ca");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM, cert DER)
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client_config(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
}

async fn start(ca: &TestCa) -> Server {
    captured_logs();
    let metrics = Arc::new(Metrics::new());
    let store = CertStore::new(Some(metrics.clone()));
    let (crt, key, _) = ca.leaf();
    store
        .load_pem(crt.as_bytes(), key.as_bytes(), Some(&ca.pem), "test")
        .expect("load");
    let (caches, mut writers) = ClusterCache::new();
    samples::populate(&mut writers);
    // The writers must outlive the test's requests (dropping one only ends readiness waits).
    std::mem::forget(writers);
    let state = WebhookState::new(caches, "openshift-sandboxed-containers-operator", &metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        router(state),
        Some(tls_config(store.resolver())),
        shutdown.clone(),
    ));
    Server {
        addr,
        metrics,
        store,
        shutdown,
    }
}

fn client(ca: &TestCa, h2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder();
    if h2 {
        b.use_preconfigured_tls(ca.client_config(&[b"h2"], rustls::ALL_VERSIONS))
            .http2_prior_knowledge()
    } else {
        b.use_preconfigured_tls(ca.client_config(&[b"http/1.1"], rustls::ALL_VERSIONS))
            .http1_only()
    }
    .build()
    .expect("client")
}

fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("webhooks/samples")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn review(
    c: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
) -> (reqwest::Version, Value) {
    let resp = c
        .post(format!("https://127.0.0.1:{}{path}", addr.port()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let version = resp.version();
    (version, resp.json().await.expect("json"))
}

fn patched_object(request: &[u8], response: &Value) -> Value {
    // kube-core sends the bytes as a JSON array (which the API server's decoder accepts for a
    // []byte field); base64 text is the other accepted form.
    let patch: Vec<u8> = match &response["patch"] {
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
        other => serde_json::from_value(other.clone()).expect("patch bytes"),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("json patch");
    let mut obj: Value =
        serde_json::from_slice::<Value>(request).expect("req")["request"]["object"].clone();
    json_patch::patch(&mut obj, &patch.0).expect("patch applies to the real pod");
    obj
}

#[tokio::test]
async fn every_endpoint_answers_the_samples_over_http1_and_h2() {
    let ca = TestCa::new();
    let server = start(&ca).await;
    for (h2, want) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let c = client(&ca, h2);
        let addr = server.addr;

        let body = sample("pod-plain-require");
        let (v, r) = review(&c, addr, "/mutate-pod", body.clone()).await;
        assert_eq!(v, want);
        let resp = &r["response"];
        assert_eq!(r["kind"], "AdmissionReview");
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(resp["uid"], "00000000-0000-0000-0000-000000000101");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        let pod = patched_object(&body, resp);
        assert_eq!(pod["spec"]["runtimeClassName"], "kata");
        assert_eq!(
            pod["spec"]["overhead"],
            serde_json::json!({"cpu": "250m", "memory": "350Mi"})
        );
        assert_eq!(
            pod["spec"]["nodeSelector"]["node-role.kubernetes.io/kata-oc"],
            ""
        );
        assert_eq!(
            pod["spec"]["tolerations"].as_array().expect("kept").len(),
            2,
            "defaults kept"
        );

        let (_, r) = review(&c, addr, "/mutate-pod", sample("pod-plain-allow")).await;
        assert_eq!(r["response"]["allowed"], true);
        assert!(r["response"].get("patch").is_none());

        let (_, r) = review(&c, addr, "/mutate-pod", sample("pod-create-by-replicaset")).await;
        assert_eq!(r["response"]["allowed"], true);
        assert!(
            r["response"].get("patch").is_none(),
            "unlabelled namespace, default allow"
        );

        let (_, r) = review(&c, addr, "/validate-pod", sample("pod-kata-deny")).await;
        assert_eq!(r["response"]["allowed"], false);
        let msg = r["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(msg.contains("may not use the kata RuntimeClass"), "{msg}");

        let (_, r) = review(&c, addr, "/validate-pod", sample("pod-gvisor-require")).await;
        assert_eq!(r["response"]["allowed"], false);

        let (_, r) = review(&c, addr, "/validate-pod", sample("pod-kata-require")).await;
        assert_eq!(
            r["response"]["allowed"], true,
            "the API server's own kata pod (overhead filled in) passes"
        );

        let (_, r) = review(
            &c,
            addr,
            "/validate-pod",
            sample("pod-create-kata-hostnetwork"),
        )
        .await;
        assert_eq!(r["response"]["allowed"], false);
        let msg = r["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(
            msg.contains("hostNetwork") && msg.contains("virtual machine"),
            "{msg}"
        );

        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-create-second"),
        )
        .await;
        assert_eq!(r["response"]["allowed"], false);
        let msg = r["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(
            msg.contains("\"example-kataconfig\" already exists"),
            "{msg}"
        );

        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-create-bad-selector"),
        )
        .await;
        let msg = r["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(
            msg.contains(
                "spec.kataConfigPoolSelector.matchExpressions[0].values: must be specified"
            ),
            "{msg}"
        );

        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-create-bad-loglevel"),
        )
        .await;
        let msg = r["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(msg.contains("spec.logLevel"), "{msg}");

        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-create-no-match"),
        )
        .await;
        assert_eq!(r["response"]["allowed"], true);
        let warnings = r["response"]["warnings"].to_string();
        assert!(warnings.contains("no worker node matches"), "{warnings}");

        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-create"),
        )
        .await;
        assert_eq!(
            r["response"]["allowed"], true,
            "same name as the existing one: a retry"
        );
        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-delete"),
        )
        .await;
        assert_eq!(r["response"]["allowed"], true);
        let (_, r) = review(
            &c,
            addr,
            "/validate-kataconfig",
            sample("kataconfig-update"),
        )
        .await;
        assert_eq!(r["response"]["allowed"], true);
    }
    let text = server.metrics.encode();
    assert!(
        text.contains(r#"kata_operator_admission_requests_total{operation="CREATE",result="mutated",webhook="mutate-pod"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"kata_operator_admission_requests_total{operation="DELETE",result="allowed",webhook="validate-kataconfig"} 2"#));
    assert!(text.contains("kata_operator_certificate_expiry_timestamp_seconds"));
    server.shutdown.cancel();
}

#[tokio::test]
async fn malformed_reviews_get_http_200_with_an_error_result() {
    let ca = TestCa::new();
    let server = start(&ca).await;
    let c = client(&ca, false);
    for (body, words) in [
        (b"{not json".to_vec(), "malformed AdmissionReview"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "no request"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-9","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"spec":{"hostNetwork":"yes"}}}}"#.to_vec(),
            "request.object.spec.hostNetwork",
        ),
    ] {
        for path in ["/mutate-pod", "/validate-pod", "/validate-kataconfig"] {
            let (_, r) = review(&c, server.addr, path, body.clone()).await;
            assert_eq!(r["response"]["allowed"], false, "{path}");
            let msg = r["response"]["status"]["message"].as_str().expect("message");
            if path != "/validate-kataconfig" || !words.starts_with("request.object") {
                assert!(msg.contains(words), "{path}: {msg}");
            }
        }
    }
    // The uid survives when the rest is unreadable, so the API server can match the answer.
    let (_, r) = review(
        &c,
        server.addr,
        "/mutate-pod",
        br#"{"request":{"uid":"keep-me","operation":"BOOM"}}"#.to_vec(),
    )
    .await;
    assert_eq!(r["response"]["uid"], "keep-me");
    assert!(
        server
            .metrics
            .encode()
            .contains(r#"result="error",webhook="mutate-pod""#)
    );
    server.shutdown.cancel();
}

#[tokio::test]
async fn oversize_body_and_wrong_content_type_are_refused() {
    let ca = TestCa::new();
    let server = start(&ca).await;
    for h2 in [false, true] {
        let c = client(&ca, h2);
        let url = format!("https://127.0.0.1:{}/validate-pod", server.addr.port());
        let big = vec![b' '; 5 * 1024 * 1024];
        let resp = c
            .post(&url)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 413);
        let resp = c
            .post(&url)
            .header("content-type", "text/plain")
            .body(sample("pod-plain-require"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 415);
        assert!(
            resp.text()
                .await
                .expect("text")
                .contains("Content-Type: application/json")
        );
        let resp = c.get(&url).send().await.expect("send");
        assert_eq!(resp.status(), 405);
    }
    server.shutdown.cancel();
}

async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no peer certificate".to_string())
}

#[tokio::test]
async fn tls12_only_clients_are_served() {
    let ca = TestCa::new();
    let server = start(&ca).await;
    let cfg = ca.client_config(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    handshake(&connector, server.addr)
        .await
        .expect("TLS 1.2 handshake");
    server.shutdown.cancel();
}

fn write_version(dir: &Path, version: &str, crt: &str, key: &str) {
    let d = dir.join(version);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join("tls.crt"), crt).expect("crt");
    std::fs::write(d.join("tls.key"), key).expect("key");
}

/// The kubelet's atomic update of a mounted Secret: a new timestamped directory, then the
/// `..data` symlink renamed over.
fn swap_data(dir: &Path, version: &str) {
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("atomic rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_in_cert_dir_never_fails_a_handshake() {
    let ca = TestCa::new();
    let server = start(&ca).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let (old_crt, old_key, old_der) = ca.leaf();
    write_version(&dir, "..2026_11_23_1", &old_crt, &old_key);
    swap_data(&dir, "..2026_11_23_1");
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("link");
    }
    dir::load_once(&server.store, &dir)
        .await
        .expect("initial load");
    tokio::spawn(dir::watch(
        server.store.clone(),
        dir.clone(),
        std::time::Duration::from_millis(10),
        server.shutdown.clone(),
    ));

    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        ca.client_config(&[b"http/1.1"], rustls::ALL_VERSIONS),
    ));
    let done = Arc::new(AtomicUsize::new(0));
    let (new_crt, new_key, new_der) = ca.leaf();
    let client = {
        let (done, new_der, addr) = (done.clone(), new_der.clone(), server.addr);
        tokio::spawn(async move {
            let (mut failures, mut new_in_a_row, mut served_old) = (Vec::new(), 0, 0);
            // Bounded: at most 20000 connections; stop once the new cert is served steadily.
            for _ in 0..20_000 {
                match handshake(&connector, addr).await {
                    Ok(der) if der == new_der => new_in_a_row += 1,
                    Ok(_) => {
                        served_old += 1;
                        new_in_a_row = 0;
                    }
                    Err(e) => failures.push(e),
                }
                done.fetch_add(1, Ordering::SeqCst);
                if new_in_a_row >= 50 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            (failures, new_in_a_row, served_old)
        })
    };
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::SeqCst) < n {
                tokio::task::yield_now().await;
            }
        }
    };
    wait_for(30).await;
    // A broken update (key does not match) is ignored: the old certificate keeps being served.
    write_version(&dir, "..2026_11_23_2", &new_crt, &old_key);
    swap_data(&dir, "..2026_11_23_2");
    let logs = captured_logs();
    let reported = || logs.text().contains("still serving the previous one");
    for _ in 0..2000 {
        if reported() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(reported(), "the broken update was reported");
    assert_eq!(server.store.info().expect("loaded").not_after, {
        sandboxed_containers_operator::certs::inspect(&old_crt, "old")
            .expect("i")
            .not_after
    });
    write_version(&dir, "..2026_11_23_3", &new_crt, &new_key);
    swap_data(&dir, "..2026_11_23_3");
    let _ = std::fs::remove_dir_all(dir.join("..2026_11_23_1"));
    let (failures, new_in_a_row, served_old) = client.await.expect("client");
    assert!(failures.is_empty(), "failed handshakes: {failures:?}");
    assert!(served_old >= 30, "old certificate served before the swap");
    assert_eq!(
        new_in_a_row, 50,
        "the new certificate is served after the swap"
    );
    assert_ne!(old_der, new_der);

    let logs = captured_logs().text();
    assert!(
        logs.contains("still serving the previous one"),
        "bad update was reported"
    );
    for key in [&old_key, &new_key] {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(
            !logs.contains(&body[..40]),
            "private key material in the logs"
        );
    }
    assert!(!logs.contains("PRIVATE KEY"));
    server.shutdown.cancel();
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new();
    let server = start(&ca).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        ca.client_config(&[b"http/1.1"], rustls::ALL_VERSIONS),
    ));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    // Promise 1000 bytes, send 10, then stall: the server's request time bound answers.
    tls.write_all(
        b"POST /validate-pod HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"request\"",
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 256];
    let n = tls.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    server.shutdown.cancel();
}
