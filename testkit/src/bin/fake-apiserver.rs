//! The in-memory API server ([`testkit::FakeApi`]) as a process of its own, serving HTTPS on
//! loopback, so a benchmark can run the operator's release binary against it and measure the
//! operator alone (dev-only: this binary belongs to testkit, never to the operator's image).
//!
//! ```sh
//! fake-apiserver --dir DIR [--bind 127.0.0.1:0]
//! ```
//!
//! Writes into DIR:
//! - `operator.kubeconfig`: authenticates as the operator's ServiceAccount
//!   (`openshift-sandboxed-containers-operator/sandboxed-containers-operator`), authorized by
//!   the generated RBAC exactly as in-process ([`testkit::FakeApi::client`]);
//! - `admin.kubeconfig`: a cluster administrator logged as client `admin`;
//! - `ca.crt`: the CA of the serving certificate.
//!
//! Bearer tokens: `operator` is the operator; `admin:<name>` is an administrator logged as
//! client `<name>` (so an MCO simulator can use `admin:mco-sim`); anything else is 401.
//! Prints `READY https://127.0.0.1:<port>` once it serves, and exits when its standard input
//! closes (so it never outlives the benchmark that started it) or on SIGTERM/SIGINT.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use testkit::{FakeApi, UserInfo};
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (a big list of objects in one write is a few MiB).
const MAX_BODY: usize = 64 << 20;

struct Args {
    dir: PathBuf,
    bind: SocketAddr,
}

fn args() -> anyhow::Result<Args> {
    let mut dir = None;
    let mut bind: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--dir", Some(v)) => dir = Some(PathBuf::from(v)),
            ("--bind", Some(v)) => {
                bind = v.parse().with_context(|| format!("--bind {v}"))?;
            }
            (flag, _) => bail!(
                "unknown or incomplete flag {flag}; usage: fake-apiserver --dir DIR [--bind 127.0.0.1:PORT]"
            ),
        }
    }
    if !bind.ip().is_loopback() {
        bail!("--bind {bind}: only loopback addresses are served");
    }
    let dir = dir.context("--dir DIR is required (where the kubeconfigs are written)")?;
    Ok(Args { dir, bind })
}

/// A throwaway CA and a serving certificate for 127.0.0.1; returns the CA PEM.
fn certificates() -> anyhow::Result<(String, CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake-apiserver-ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let cert = params.signed_by(&key, &issuer)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((ca_cert.pem(), cert.der().clone(), key_der))
}

fn write_kubeconfig(path: &Path, url: &str, ca_pem: &str, token: &str) -> anyhow::Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: fake\n  user:\n    token: \"{token}\"\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n"
        ),
    )
    .with_context(|| format!("write {}", path.display()))
}

/// Who a bearer token is: (client name for the request log, user).
fn identify(fake: &FakeApi, req: &Request<Body>) -> Option<(String, UserInfo)> {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    match auth.strip_prefix("Bearer ")? {
        "operator" => Some(("operator".into(), fake.operator_user())),
        other => {
            let name = other.strip_prefix("admin:")?;
            Some((name.to_string(), UserInfo::admin(name)))
        }
    }
}

async fn handle(State(fake): State<FakeApi>, req: Request<Body>) -> Response<Body> {
    let Some((client, user)) = identify(&fake, &req) else {
        let mut resp = Response::new(Body::from(
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
        ));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    };
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut resp = Response::new(Body::from(format!("reading the request body: {e}")));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return resp;
        }
    };
    let req = Request::from_parts(parts, kube::client::Body::from(bytes));
    fake.serve_as(req, &client, &user).await.map(Body::new)
}

/// Resolves when standard input reaches its end (read on a plain thread: tokio's stdin needs a
/// feature the workspace does not enable).
async fn until_stdin_closes() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn serve(args: Args) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let (ca_pem, cert, key) = certificates()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("bind {}", args.bind))?;
    let url = format!("https://{}", listener.local_addr()?);
    fs::write(args.dir.join("ca.crt"), &ca_pem)?;
    write_kubeconfig(
        &args.dir.join("operator.kubeconfig"),
        &url,
        &ca_pem,
        "operator",
    )?;
    write_kubeconfig(
        &args.dir.join("admin.kubeconfig"),
        &url,
        &ca_pem,
        "admin:admin",
    )?;
    let fake = FakeApi::new();
    let router = axum::Router::new().fallback(handle).with_state(fake);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(sandboxed_containers_operator::server::serve(
        listener,
        router,
        Some(Arc::new(tls)),
        shutdown.clone(),
    ));
    println!("READY {url}");
    tokio::select! {
        () = until_stdin_closes() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
    shutdown.cancel();
    // Open watches end with the process; no need to wait out the drain.
    drop(server);
    Ok(())
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = args().and_then(|a| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?
            .block_on(serve(a))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-apiserver: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
