//! The real webhook router, TLS stack and handlers, serving the sample cluster of
//! `webhooks/samples/` (see `testkit::webhook_samples`) on loopback without a Kubernetes API server.
//! Used by `hack/bench-webhook.sh` and by the curl examples in `docs/webhooks.md`.
//!
//! Usage: `cargo run --release --example webhook_sample_server -- 127.0.0.1:19443 /tmp/webhook-ca.crt`
//! (the CA that signed the serving certificate is written to the second argument).

use std::sync::Arc;

use sandboxed_containers_operator::cache::ClusterCache;
use sandboxed_containers_operator::certs::CertStore;
use sandboxed_containers_operator::certs::issue::{Lifetimes, plan};
use sandboxed_containers_operator::observability::Metrics;
use sandboxed_containers_operator::server::{serve, tls_config};
use sandboxed_containers_operator::webhook::{WebhookState, router};
use testkit::webhook_samples as samples;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:19443".into())
        .parse()?;
    let ca_out = args.next().unwrap_or_else(|| "/tmp/webhook-ca.crt".into());

    let metrics = Arc::new(Metrics::new());
    let store = CertStore::new(Some(metrics.clone()));
    let hosts = vec![addr.ip().to_string(), "localhost".to_string()];
    let material = plan(
        None,
        &hosts,
        jiff::Timestamp::now().as_second(),
        &Lifetimes::default(),
    )?
    .write
    .ok_or_else(|| anyhow::anyhow!("no certificate material generated"))?;
    store.load_pem(
        material.tls_crt.as_bytes(),
        material.tls_key.as_bytes(),
        Some(&material.ca_crt),
        "generated",
    )?;
    std::fs::write(&ca_out, &material.ca_crt)?;

    let (caches, mut writers) = ClusterCache::new();
    samples::populate(&mut writers);
    let state = WebhookState::new(caches, "openshift-sandboxed-containers-operator", &metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("webhook sample server on https://{addr} (CA in {ca_out})");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    serve(
        listener,
        router(state),
        Some(tls_config(store.resolver())),
        shutdown,
    )
    .await?;
    drop(writers);
    Ok(())
}
