//! Serving certificates for the webhook (and metrics) servers.
//!
//! - [`CertStore`]: the certificate being served, swapped atomically (`ArcSwap`) so every new TLS
//!   handshake gets the current one without a restart; on a bad reload the last good one stays.
//! - [`issue`]: a self-managed CA and serving certificate (rcgen) and the pure rotation plan.
//! - [`secret`]: Secret-managed mode — all replicas converge on one Secret in the operator's
//!   namespace, rotate before expiry, and swap when it changes.
//! - [`dir`]: `--cert-dir` mode — `tls.crt`/`tls.key` (optional `ca.crt`) reloaded on change,
//!   including the kubelet's `..data` symlink swap of a mounted Secret.
//!
//! Private keys are never logged or printed: errors name the file or Secret key, never content.

pub mod dir;
pub mod issue;
pub mod secret;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::observability::Metrics;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: no PEM private key found (PKCS#8, PKCS#1 or SEC1 expected)")]
    NoKey { what: String },
    #[error("{what}: cannot parse PEM: {reason}")]
    BadPem { what: String, reason: String },
    #[error("{what}: the certificate cannot be read: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("{what}: the private key does not match the certificate or is unsupported: {reason}")]
    KeyMismatch { what: String, reason: String },
    #[error("{what}: {reason}")]
    Issue { what: String, reason: String },
}

/// What the loaded certificate says about itself (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses (as text).
    pub sans: Vec<String>,
    pub is_ca: bool,
}

/// Reads the first certificate of a PEM text.
pub fn inspect(cert_pem: &str, what: &str) -> Result<CertInfo, CertError> {
    let ders = certs_from_pem(cert_pem.as_bytes(), what)?;
    let first = ders.first().ok_or_else(|| CertError::NoCertificate {
        what: what.to_string(),
    })?;
    inspect_der(first, what)
}

fn inspect_der(der: &[u8], what: &str) -> Result<CertInfo, CertError> {
    let bad = |reason: String| CertError::BadCertificate {
        what: what.to_string(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sans,
        is_ca: cert.is_ca(),
    })
}

fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &pem[..]).collect();
    let certs = certs.map_err(|e| CertError::BadPem {
        what: what.to_string(),
        reason: e.kind().to_string(),
    })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// Builds a rustls key pair from PEM and checks that key and certificate belong together.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<(CertifiedKey, CertInfo), CertError> {
    let chain = certs_from_pem(cert_pem, what)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        // The error kind only (an io error kind), never the content.
        .map_err(|e| CertError::BadPem {
            what: what.to_string(),
            reason: e.kind().to_string(),
        })?
        .ok_or_else(|| CertError::NoKey {
            what: what.to_string(),
        })?;
    let info = inspect_der(&chain[0], what)?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| CertError::KeyMismatch {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    Ok((ck, info))
}

/// The certificate being served, shared by every listener and swapped without restart.
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
    info: ArcSwapOption<CertInfo>,
    /// PEM CA bundle to publish as the webhooks' `caBundle` (`None`: someone else injects it).
    ca_bundle: ArcSwapOption<String>,
    generation: watch::Sender<u64>,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("info", &self.info.load())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwapOption::empty(),
            info: ArcSwapOption::empty(),
            ca_bundle: ArcSwapOption::empty(),
            generation: watch::channel(0).0,
            metrics,
        })
    }

    /// Installs a new certificate (after checking it); the old one stays on error.
    pub fn load_pem(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_bundle: Option<&str>,
        what: &str,
    ) -> Result<CertInfo, CertError> {
        let (ck, info) = certified_key(cert_pem, key_pem, what)?;
        if let Some(ca) = ca_bundle {
            // Refuse a bundle that is not PEM certificates: the API server would reject it.
            certs_from_pem(ca.as_bytes(), &format!("{what} (CA bundle)"))?;
        }
        let unchanged = self
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.cert == ck.cert)
            && self.ca_bundle.load().as_deref().map(String::as_str) == ca_bundle;
        self.current.store(Some(Arc::new(ck)));
        self.info.store(Some(Arc::new(info.clone())));
        self.ca_bundle
            .store(ca_bundle.map(|s| Arc::new(s.to_string())));
        if let Some(m) = &self.metrics {
            m.certificate_expiry.set(info.not_after as f64);
        }
        if !unchanged {
            self.generation.send_modify(|g| *g += 1);
        }
        Ok(info)
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn info(&self) -> Option<CertInfo> {
        self.info.load().as_deref().cloned()
    }

    pub fn ca_bundle(&self) -> Option<String> {
        self.ca_bundle.load().as_deref().cloned()
    }

    /// Changes whenever a different certificate or CA bundle is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The resolver to put in a rustls `ServerConfig` (see `crate::server::tls_config`).
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }
}

struct Resolver(Arc<CertStore>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertStoreResolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(host: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn bad_reload_keeps_the_last_good_certificate() {
        let store = CertStore::new(Some(Arc::new(Metrics::new())));
        let (c1, k1) = pair("one.example");
        let info = store
            .load_pem(c1.as_bytes(), k1.as_bytes(), None, "test")
            .expect("good");
        assert_eq!(info.sans, ["one.example"]);
        let rx = store.subscribe();
        let (c2, _) = pair("two.example");
        let err = store
            .load_pem(c2.as_bytes(), k1.as_bytes(), None, "tls.crt")
            .expect_err("mismatch");
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().starts_with("tls.crt:"), "{err}");
        assert_eq!(store.info().expect("loaded").sans, ["one.example"]);
        assert!(!rx.has_changed().expect("open"), "no swap on error");
    }

    #[test]
    fn errors_name_the_source_and_never_echo_key_material() {
        let store = CertStore::new(None);
        let (c, k) = pair("x.example");
        let err = store
            .load_pem(b"", k.as_bytes(), None, "dir/tls.crt")
            .expect_err("empty");
        assert_eq!(err.to_string(), "dir/tls.crt: no PEM certificate found");
        let err = store
            .load_pem(c.as_bytes(), b"garbage", None, "dir/tls.key")
            .expect_err("no key");
        assert!(
            err.to_string().contains("no PEM private key found"),
            "{err}"
        );
        // A key given where the certificate belongs: no certificate, and no key bytes echoed.
        let err = store
            .load_pem(k.as_bytes(), k.as_bytes(), None, "s")
            .expect_err("swapped");
        let text = format!("{err} {err:?} {store:?}");
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains(&k[40..80]),
            "{text}"
        );
        let err = store
            .load_pem(c.as_bytes(), k.as_bytes(), Some("not pem"), "s")
            .expect_err("bad bundle");
        assert!(err.to_string().contains("CA bundle"), "{err}");
    }

    #[test]
    fn ip_sans_are_reported_as_addresses() {
        let (c, _) = pair("127.0.0.1");
        assert_eq!(inspect(&c, "t").expect("info").sans, ["127.0.0.1"]);
    }
}
