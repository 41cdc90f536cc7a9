//! Benchmark reference points between the canned baseline and the real webhook: the webhook's
//! own TLS/HTTP stack (`crate::server::serve` + axum) answering the canned response after doing
//! only the unavoidable JSON work on the request body. Shows where the time goes.
//!
//! Usage: `cargo run --release --example bench_floor -- scan|parse 127.0.0.1:19446`
//! - `scan`: serde_json walks the whole review without building anything (`IgnoredAny`);
//! - `parse`: the webhook's own parse of the review (`review::parse::<PodView>`), no decision.

use axum::body::Bytes;
use sandboxed_containers_operator::certs::CertStore;
use sandboxed_containers_operator::server::{serve, tls_config};
use sandboxed_containers_operator::webhook::{pod, review};
use tokio_util::sync::CancellationToken;

const CANNED: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000101","allowed":true,"status":{"metadata":{}}}}"#;

async fn scan(body: Bytes) -> ([(&'static str, &'static str); 1], &'static [u8]) {
    let _ = std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body));
    ([("content-type", "application/json")], CANNED)
}

async fn parse(body: Bytes) -> ([(&'static str, &'static str); 1], &'static [u8]) {
    let _ = std::hint::black_box(review::parse::<pod::PodView>(&body));
    ([("content-type", "application/json")], CANNED)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "parse".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:19446".into());
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?.self_signed(&key)?;
    let store = CertStore::new(None);
    store.load_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        None,
        "generated",
    )?;
    let route = match mode.as_str() {
        "scan" => axum::routing::post(scan),
        "parse" => axum::routing::post(parse),
        other => anyhow::bail!("unknown mode {other:?}: use scan or parse"),
    };
    let app = axum::Router::new().route("/validate-pod", route);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bench floor ({mode}) on https://{addr}");
    serve(
        listener,
        app,
        Some(tls_config(store.resolver())),
        CancellationToken::new(),
    )
    .await?;
    Ok(())
}
