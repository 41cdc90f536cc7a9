//! `--cert-dir` mode: `tls.crt` and `tls.key` (and, if present, `ca.crt` to publish as
//! `caBundle`) read from a directory and reloaded when their content changes.
//!
//! The directory is polled (content compared, not modification times): a mounted Secret is
//! updated by the kubelet swapping the `..data` symlink, which inotify on the file paths does not
//! report reliably, and reading two small files once a second costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::issue::{CA_CRT, TLS_CRT, TLS_KEY};
use super::{CertError, CertStore};

pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// Files as last read, to detect changes.
#[derive(Default, PartialEq, Eq)]
struct Seen {
    crt: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

async fn read(dir: &Path) -> Result<Seen, CertError> {
    let file = |name: &str| dir.join(name);
    let io = |path: PathBuf, e: std::io::Error| CertError::BadPem {
        what: path.display().to_string(),
        reason: e.kind().to_string(),
    };
    let crt = tokio::fs::read(file(TLS_CRT))
        .await
        .map_err(|e| io(file(TLS_CRT), e))?;
    let key = tokio::fs::read(file(TLS_KEY))
        .await
        .map_err(|e| io(file(TLS_KEY), e))?;
    let ca = match tokio::fs::read(file(CA_CRT)).await {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(file(CA_CRT), e)),
    };
    Ok(Seen { crt, key, ca })
}

/// Loads the directory once into the store.
pub async fn load_once(store: &CertStore, dir: &Path) -> Result<(), CertError> {
    let seen = read(dir).await?;
    install(store, dir, &seen)
}

fn install(store: &CertStore, dir: &Path, seen: &Seen) -> Result<(), CertError> {
    let ca = match &seen.ca {
        Some(b) => Some(String::from_utf8(b.clone()).map_err(|_| CertError::BadPem {
            what: dir.join(CA_CRT).display().to_string(),
            reason: "not UTF-8 text".into(),
        })?),
        None => None,
    };
    let info = store.load_pem(
        &seen.crt,
        &seen.key,
        ca.as_deref(),
        &dir.join(TLS_CRT).display().to_string(),
    )?;
    info!(dir = %dir.display(), not_after = info.not_after, sans = ?info.sans, "serving certificate loaded from directory");
    Ok(())
}

/// Polls `dir` until `shutdown`, installing every new valid pair; on an invalid or half-written
/// pair the previous certificate keeps being served and the next poll tries again.
pub async fn watch(
    store: Arc<CertStore>,
    dir: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last: Option<Seen> = None;
    let mut last_error: Option<String> = None;
    loop {
        match read(&dir).await {
            Ok(seen) if last.as_ref() != Some(&seen) => match install(&store, &dir, &seen) {
                Ok(()) => {
                    last = Some(seen);
                    last_error = None;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if last_error.as_ref() != Some(&msg) {
                        warn!(error = %msg, "cannot load the serving certificate; still serving the previous one");
                    }
                    last_error = Some(msg);
                }
            },
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_ref() != Some(&msg) {
                    warn!(error = %msg, "cannot read the certificate directory; still serving the previous certificate");
                }
                last_error = Some(msg);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_files_are_named_and_a_ca_bundle_is_optional() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(None);
        let err = load_once(&store, tmp.path()).await.expect_err("empty dir");
        let msg = err.to_string();
        assert!(
            msg.contains("tls.crt") && msg.contains("entity not found"),
            "{msg}"
        );

        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["svc.ns.svc".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(tmp.path().join(TLS_CRT), cert.pem()).expect("crt");
        let err = load_once(&store, tmp.path()).await.expect_err("no key");
        assert!(err.to_string().contains("tls.key"), "{err}");
        std::fs::write(tmp.path().join(TLS_KEY), key.serialize_pem()).expect("key");
        load_once(&store, tmp.path())
            .await
            .expect("pair without ca.crt");
        assert_eq!(
            store.ca_bundle(),
            None,
            "caBundle left to whoever injects it"
        );
        std::fs::write(tmp.path().join(CA_CRT), cert.pem()).expect("ca");
        load_once(&store, tmp.path()).await.expect("with ca.crt");
        assert_eq!(store.ca_bundle(), Some(cert.pem()));
    }
}
