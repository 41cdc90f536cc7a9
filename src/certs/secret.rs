//! Secret-managed mode: the CA and serving certificate live in one Secret in the operator's
//! namespace. Every replica runs [`run`]: it creates the Secret if absent (create-if-absent; a
//! conflict means another replica won, so it re-reads), rotates it before expiry (replace with
//! the read `resourceVersion`; a conflict means someone else rotated, so it re-reads), and
//! watches it, so all replicas serve the same, current certificate without restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CertStore;
use super::issue::{CA_CRT, CA_KEY, CertMaterial, Lifetimes, TLS_CRT, TLS_KEY, plan};
use crate::kubeapi::{CallError, REQUEST_TIMEOUT, bounded};
use crate::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Name of the Secret holding the webhook CA and serving certificate.
pub const SECRET_NAME: &str = "sandboxed-containers-operator-webhook-cert";

#[derive(Clone)]
pub struct SecretConfig {
    pub namespace: String,
    pub name: String,
    /// Hosts the serving certificate must cover (Service DNS names, or the `--webhook-url` host).
    pub hosts: Vec<String>,
    pub lifetimes: Lifetimes,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// The material in a Secret, if all four keys are present.
pub fn material_from_secret(secret: &Secret) -> Option<CertMaterial> {
    let data = secret.data.as_ref()?;
    Some(CertMaterial {
        ca_crt: text(data, CA_CRT)?,
        ca_key: text(data, CA_KEY)?,
        tls_crt: text(data, TLS_CRT)?,
        tls_key: text(data, TLS_KEY)?,
    })
}

fn secret_data(m: &CertMaterial) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (
            CA_CRT.to_string(),
            ByteString(m.ca_crt.clone().into_bytes()),
        ),
        (
            CA_KEY.to_string(),
            ByteString(m.ca_key.clone().into_bytes()),
        ),
        (
            TLS_CRT.to_string(),
            ByteString(m.tls_crt.clone().into_bytes()),
        ),
        (
            TLS_KEY.to_string(),
            ByteString(m.tls_key.clone().into_bytes()),
        ),
    ])
}

fn install(store: &CertStore, m: &CertMaterial, name: &str) {
    if let Err(e) = store.load_pem(
        m.tls_crt.as_bytes(),
        m.tls_key.as_bytes(),
        Some(&m.ca_crt),
        &format!("Secret {name}"),
    ) {
        warn!(error = %e, "cannot serve the certificate from the Secret; still serving the previous one");
    }
}

fn is_conflict(e: &CallError) -> bool {
    matches!(e, CallError::Kube(kube::Error::Api(s)) if s.code == 409)
}

/// One pass: read, rotate if needed, install. Returns when to look again.
pub async fn reconcile_once(
    api: &Api<Secret>,
    cfg: &SecretConfig,
    store: &CertStore,
) -> anyhow::Result<Duration> {
    let existing = bounded(REQUEST_TIMEOUT, api.get_opt(&cfg.name)).await?;
    let current = existing.as_ref().and_then(material_from_secret);
    let now = jiff::Timestamp::now().as_second();
    let p = plan(current.as_ref(), &cfg.hosts, now, &cfg.lifetimes)?;
    let Some(new) = p.write else {
        if let Some(cur) = &current {
            install(store, cur, &cfg.name);
        }
        return Ok(p.recheck_in);
    };
    let result = match existing {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY_LABEL.to_string(),
                        MANAGED_BY_VALUE.to_string(),
                    )])),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".to_string()),
                data: Some(secret_data(&new)),
                ..Default::default()
            };
            bounded(REQUEST_TIMEOUT, api.create(&PostParams::default(), &secret)).await
        }
        Some(mut secret) => {
            // Replace carries the resourceVersion we read: optimistic concurrency between replicas.
            secret.data = Some(secret_data(&new));
            bounded(
                REQUEST_TIMEOUT,
                api.replace(&cfg.name, &PostParams::default(), &secret),
            )
            .await
        }
    };
    match result {
        Ok(_) => {
            info!(secret = %cfg.name, reason = p.reason, "webhook certificate written");
            install(store, &new, &cfg.name);
            Ok(p.recheck_in)
        }
        // Another replica created or rotated it first: read theirs.
        Err(e) if is_conflict(&e) => Ok(Duration::ZERO),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the Secret current and the store in sync with it until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: SecretConfig,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
) {
    let api: Api<Secret> = Api::namespaced(client, &cfg.namespace);
    let events = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.name)),
    )
    .default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        let wait = match reconcile_once(&api, &cfg, &store).await {
            Ok(d) => d.max(Duration::from_millis(100)),
            Err(e) => {
                warn!(error = %e, secret = %cfg.name, "cannot manage the webhook certificate Secret; retrying");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            ev = events.next() => {
                if let Some(Err(e)) = ev {
                    warn!(error = %e, "watch of the certificate Secret failed; retrying");
                }
            }
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::issue::service_hosts;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn cfg() -> SecretConfig {
        SecretConfig {
            namespace: "op".into(),
            name: SECRET_NAME.into(),
            hosts: service_hosts("svc", "op"),
            lifetimes: Lifetimes::default(),
        }
    }

    fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&v).expect("json")))
            .expect("response")
    }

    fn status(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
    }

    async fn body_json(req: Request<Body>) -> serde_json::Value {
        let bytes = http_body_util::BodyExt::collect(req.into_body())
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json body")
    }

    fn mock() -> (Api<Secret>, Handle) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "op");
        (Api::namespaced(client, "op"), handle)
    }

    #[tokio::test]
    async fn absent_secret_is_created_and_served() {
        let (api, mut handle) = mock();
        let store = CertStore::new(None);
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("get");
            assert_eq!(req.method(), Method::GET);
            assert!(
                req.uri()
                    .path()
                    .ends_with(&format!("/secrets/{SECRET_NAME}"))
            );
            send.send_response(json(StatusCode::NOT_FOUND, status(404, "NotFound")));
            let (req, send) = handle.next_request().await.expect("create");
            assert_eq!(req.method(), Method::POST);
            let body = body_json(req).await;
            assert_eq!(body["type"], "kubernetes.io/tls");
            for k in ["tls.crt", "tls.key", "ca.crt", "ca.key"] {
                assert!(body["data"][k].is_string(), "{k}");
            }
            send.send_response(json(StatusCode::CREATED, body));
        });
        let wait = reconcile_once(&api, &cfg(), &store).await.expect("ok");
        server.await.expect("server");
        assert!(store.is_loaded());
        assert!(
            store
                .ca_bundle()
                .expect("bundle")
                .contains("BEGIN CERTIFICATE")
        );
        assert_eq!(store.info().expect("info").sans, service_hosts("svc", "op"));
        assert!(wait > Duration::ZERO);
    }

    #[tokio::test]
    async fn losing_the_create_race_serves_the_winners_certificate() {
        let (api, mut handle) = mock();
        let store = CertStore::new(None);
        let winner = plan(
            None,
            &cfg().hosts,
            jiff::Timestamp::now().as_second(),
            &Lifetimes::default(),
        )
        .expect("plan")
        .write
        .expect("material");
        let winner_secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET_NAME.into()),
                namespace: Some("op".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            data: Some(secret_data(&winner)),
            ..Default::default()
        };
        let winner_json = serde_json::to_value(&winner_secret).expect("json");
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("get");
            send.send_response(json(StatusCode::NOT_FOUND, status(404, "NotFound")));
            let (req, send) = handle.next_request().await.expect("create");
            assert_eq!(req.method(), Method::POST);
            send.send_response(json(StatusCode::CONFLICT, status(409, "AlreadyExists")));
            let (req, send) = handle.next_request().await.expect("re-read");
            assert_eq!(req.method(), Method::GET);
            send.send_response(json(StatusCode::OK, winner_json));
        });
        let first = reconcile_once(&api, &cfg(), &store)
            .await
            .expect("conflict is not an error");
        assert_eq!(first, Duration::ZERO, "re-read at once");
        assert!(!store.is_loaded(), "our own material was not installed");
        reconcile_once(&api, &cfg(), &store).await.expect("re-read");
        server.await.expect("server");
        assert_eq!(store.ca_bundle().as_deref(), Some(winner.ca_crt.as_str()));
    }

    #[tokio::test]
    async fn expiring_certificate_is_rotated_with_optimistic_concurrency() {
        let (api, mut handle) = mock();
        let store = CertStore::new(None);
        let now = jiff::Timestamp::now().as_second();
        // Issued 356 days ago: 9 days left, inside the 30-day renewal window.
        let old = plan(
            None,
            &cfg().hosts,
            now - 356 * 24 * 3600,
            &Lifetimes::default(),
        )
        .expect("plan")
        .write
        .expect("material");
        let existing = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET_NAME.into()),
                namespace: Some("op".into()),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            data: Some(secret_data(&old)),
            ..Default::default()
        };
        let existing_json = serde_json::to_value(&existing).expect("json");
        let old_ca = old.ca_crt.clone();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("get");
            send.send_response(json(StatusCode::OK, existing_json));
            let (req, send) = handle.next_request().await.expect("replace");
            assert_eq!(req.method(), Method::PUT);
            let body = body_json(req).await;
            assert_eq!(
                body["metadata"]["resourceVersion"], "5",
                "replace is conditional"
            );
            send.send_response(json(StatusCode::OK, body.clone()));
            body
        });
        reconcile_once(&api, &cfg(), &store).await.expect("rotated");
        let written = server.await.expect("server");
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(written["data"]["ca.crt"].as_str().expect("ca"))
            .expect("b64");
        assert_eq!(
            String::from_utf8(ca).expect("utf8"),
            old_ca,
            "same CA: caBundle stays valid"
        );
        let info = store.info().expect("served");
        assert!(
            info.not_after > now + 300 * 24 * 3600,
            "the renewed certificate is served"
        );
    }
}
