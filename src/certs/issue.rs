//! A self-managed CA and serving certificate, and the pure plan that decides when to rotate.
//!
//! Rotation without a window of failed handshakes: the CA lives long (10 years) and is replaced
//! a year before it expires by adding the new CA *in front of* the old one in the bundle
//! (`ca.crt`, published as `caBundle`); the serving certificate (1 year, renewed 30 days before
//! expiry) is only signed by a CA that has been in the bundle for at least `propagation`, so the
//! API server trusts the new certificate before anyone serves it.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::{CertError, inspect};

/// Secret keys.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca_validity: Duration,
    pub ca_renew_before: Duration,
    pub cert_validity: Duration,
    pub cert_renew_before: Duration,
    /// How long a new CA must have been in the bundle before it signs the served certificate.
    pub propagation: Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca_validity: Duration::from_secs(3650 * DAY),
            ca_renew_before: Duration::from_secs(365 * DAY),
            cert_validity: Duration::from_secs(365 * DAY),
            cert_renew_before: Duration::from_secs(30 * DAY),
            propagation: Duration::from_secs(3600),
        }
    }
}

/// The four PEM texts kept in the Secret. `ca_crt` may hold several CAs, newest first;
/// `ca_key` is the newest CA's key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertMaterial {
    pub ca_crt: String,
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl std::fmt::Debug for CertMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertMaterial { .. }")
    }
}

/// Allowed clock skew between replicas and the API server.
const BACKDATE: Duration = Duration::from_secs(300);

fn err(what: &str, e: impl std::fmt::Display) -> CertError {
    CertError::Issue {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn at(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| err("time", e))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// A new CA valid from `now` (minus skew) for `validity`: (cert PEM, key PEM).
pub fn new_ca(now: i64, validity: Duration) -> Result<(String, String), CertError> {
    let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("sandboxed-containers-operator-ca@{now}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = at(now - secs(BACKDATE))?;
    params.not_after = at(now + secs(validity))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| err("CA certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `hosts` (DNS names or IP addresses), signed by the CA.
pub fn new_serving(
    ca_crt: &str,
    ca_key: &str,
    hosts: &[String],
    now: i64,
    validity: Duration,
) -> Result<(String, String), CertError> {
    let ca_info = inspect(ca_crt, CA_CRT)?;
    let ca_key = KeyPair::from_pem(ca_key).map_err(|e| err(CA_KEY, e))?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt, ca_key).map_err(|e| err(CA_CRT, e))?;
    let key = KeyPair::generate().map_err(|e| err("serving key", e))?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| err("hosts", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = at(now - secs(BACKDATE))?;
    // Never outlive the CA that signs it.
    params.not_after = at((now + secs(validity)).min(ca_info.not_after))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| err("serving certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What to do with the Secret's current material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// New material to write, if anything must change.
    pub write: Option<CertMaterial>,
    pub reason: &'static str,
    /// When to look again at the latest.
    pub recheck_in: Duration,
}

/// PEM blocks of a bundle, in order.
fn split_pem(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in bundle.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

fn fresh(hosts: &[String], now: i64, l: &Lifetimes) -> Result<CertMaterial, CertError> {
    let (ca_crt, ca_key) = new_ca(now, l.ca_validity)?;
    let (tls_crt, tls_key) = new_serving(&ca_crt, &ca_key, hosts, now, l.cert_validity)?;
    Ok(CertMaterial {
        ca_crt,
        ca_key,
        tls_crt,
        tls_key,
    })
}

/// Decides whether the material must change (pure apart from key generation).
pub fn plan(
    current: Option<&CertMaterial>,
    hosts: &[String],
    now: i64,
    l: &Lifetimes,
) -> Result<Plan, CertError> {
    let Some(cur) = current else {
        return Ok(Plan {
            write: Some(fresh(hosts, now, l)?),
            reason: "created",
            recheck_in: l.propagation,
        });
    };
    let cas = split_pem(&cur.ca_crt);
    let ca_infos: Vec<_> = cas.iter().filter_map(|c| inspect(c, CA_CRT).ok()).collect();
    let serving = super::certified_key(cur.tls_crt.as_bytes(), cur.tls_key.as_bytes(), TLS_CRT)
        .map(|(_, info)| info)
        .ok();
    let signing_ok = ca_infos.len() == cas.len()
        && !cas.is_empty()
        && super::certified_key(cur.ca_crt.as_bytes(), cur.ca_key.as_bytes(), CA_KEY).is_ok();
    let (Some(newest_ca), true) = (ca_infos.first(), signing_ok) else {
        return Ok(Plan {
            write: Some(fresh(hosts, now, l)?),
            reason: "unreadable CA replaced",
            recheck_in: l.propagation,
        });
    };
    if newest_ca.not_after <= now {
        return Ok(Plan {
            write: Some(fresh(hosts, now, l)?),
            reason: "expired CA replaced",
            recheck_in: l.propagation,
        });
    }
    let mut material = cur.clone();
    // CA rollover: prepend a new CA, keep the still-valid old ones for trust.
    if newest_ca.not_after - now <= secs(l.ca_renew_before) {
        let (ca_crt, ca_key) = new_ca(now, l.ca_validity)?;
        let mut bundle = ca_crt;
        for (pem, info) in cas.iter().zip(&ca_infos) {
            if info.not_after > now {
                bundle.push_str(pem);
            }
        }
        material.ca_crt = bundle;
        material.ca_key = ca_key;
        return Ok(Plan {
            write: Some(material),
            reason: "CA renewed (new CA added to the bundle)",
            recheck_in: l.propagation,
        });
    }
    renew_serving(material, serving.as_ref(), newest_ca, hosts, now, l)
}

/// The CA is fine: renew the serving certificate when it is unusable, does not cover the hosts,
/// or is due (once the newest CA had time to be trusted everywhere); otherwise say when to look
/// again.
fn renew_serving(
    mut material: CertMaterial,
    serving: Option<&super::CertInfo>,
    newest_ca: &super::CertInfo,
    hosts: &[String],
    now: i64,
    l: &Lifetimes,
) -> Result<Plan, CertError> {
    let newest_age = now - newest_ca.not_before - secs(BACKDATE);
    let propagated = newest_age >= secs(l.propagation);
    let hosts_ok = serving.is_some_and(|s| hosts.iter().all(|h| s.sans.contains(h)));
    let usable = serving.is_some_and(|s| s.not_before <= now && s.not_after > now);
    let (renew, reason) = if !usable {
        (true, "serving certificate missing, invalid or expired")
    } else if !hosts_ok {
        (true, "serving certificate does not cover the webhook host")
    } else if serving.is_some_and(|s| s.not_after - now <= secs(l.cert_renew_before)) {
        // Due, but wait until the newest CA is trusted everywhere while the old cert still works.
        (propagated, "serving certificate renewed before expiry")
    } else {
        (false, "current")
    };
    let recheck = |until: i64| Duration::from_secs(u64::try_from(until.max(1)).unwrap_or(1));
    if !renew {
        let next = match serving {
            Some(s) if !propagated && s.not_after - now <= secs(l.cert_renew_before) => {
                secs(l.propagation) - newest_age
            }
            Some(s) => (s.not_after - secs(l.cert_renew_before) - now)
                .min(newest_ca.not_after - secs(l.ca_renew_before) - now),
            None => 1,
        };
        return Ok(Plan {
            write: None,
            reason,
            recheck_in: recheck(next).min(Duration::from_secs(12 * 3600)),
        });
    }
    let (tls_crt, tls_key) = new_serving(
        &split_pem(&material.ca_crt)[0],
        &material.ca_key,
        hosts,
        now,
        l.cert_validity,
    )?;
    material.tls_crt = tls_crt;
    material.tls_key = tls_key;
    Ok(Plan {
        write: Some(material),
        reason,
        recheck_in: l.propagation,
    })
}

/// The DNS names a Service-fronted webhook is reached by.
pub fn service_hosts(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn hosts() -> Vec<String> {
        service_hosts("svc", "ns")
    }

    fn written(p: Plan) -> CertMaterial {
        p.write.expect("material written")
    }

    #[test]
    fn fresh_material_verifies_and_covers_the_hosts() {
        let m = written(plan(None, &hosts(), NOW, &Lifetimes::default()).expect("plan"));
        let (_, info) =
            crate::certs::certified_key(m.tls_crt.as_bytes(), m.tls_key.as_bytes(), "t")
                .expect("key matches");
        assert_eq!(info.sans, hosts());
        assert!(!info.is_ca);
        assert!(inspect(&m.ca_crt, "ca").expect("ca").is_ca);
        // A rustls client trusting ca.crt accepts the serving certificate for the host.
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut m.ca_crt.as_bytes()) {
            roots.add(c.expect("pem")).expect("add");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = rustls_pemfile::certs(&mut m.tls_crt.as_bytes())
            .next()
            .expect("one")
            .expect("pem");
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs(),
        ));
        // Issued at NOW (2027); verify at NOW to stay within validity.
        let _ = now;
        let at_now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            NOW as u64,
        ));
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &rustls::pki_types::ServerName::try_from("svc.ns.svc").expect("name"),
                &[],
                at_now,
            )
            .expect("chain verifies");
    }

    #[test]
    fn current_material_is_left_alone_until_renewal_is_due() {
        let l = Lifetimes::default();
        let m = written(plan(None, &hosts(), NOW, &l).expect("plan"));
        let p = plan(Some(&m), &hosts(), NOW + 10 * DAY as i64, &l).expect("plan");
        assert_eq!(p.write, None);
        assert_eq!(p.reason, "current");
        let p = plan(Some(&m), &hosts(), NOW + 340 * DAY as i64, &l).expect("plan");
        let renewed = written(p.clone());
        assert_eq!(p.reason, "serving certificate renewed before expiry");
        assert_eq!(renewed.ca_crt, m.ca_crt, "same CA");
        assert_ne!(renewed.tls_crt, m.tls_crt);
    }

    #[test]
    fn host_change_reissues_with_the_same_ca() {
        let l = Lifetimes::default();
        let m = written(plan(None, &hosts(), NOW, &l).expect("plan"));
        let url_host = vec!["127.0.0.1".to_string()];
        let p = plan(Some(&m), &url_host, NOW + 60, &l).expect("plan");
        assert_eq!(
            p.reason,
            "serving certificate does not cover the webhook host"
        );
        let r = written(p);
        assert_eq!(r.ca_crt, m.ca_crt);
        assert_eq!(inspect(&r.tls_crt, "t").expect("i").sans, url_host);
    }

    #[test]
    fn ca_rollover_adds_the_new_ca_first_and_signs_only_after_propagation() {
        let l = Lifetimes::default();
        let m = written(plan(None, &hosts(), NOW, &l).expect("plan"));
        let t1 = NOW + (3650 - 300) * DAY as i64;
        let p = plan(Some(&m), &hosts(), t1, &l).expect("plan");
        assert_eq!(p.reason, "CA renewed (new CA added to the bundle)");
        let rolled = written(p);
        let cas = split_pem(&rolled.ca_crt);
        assert_eq!(cas.len(), 2);
        assert_eq!(
            cas[1],
            split_pem(&m.ca_crt)[0],
            "old CA kept after the new one"
        );
        assert_eq!(
            rolled.tls_crt, m.tls_crt,
            "serving cert untouched in the same step"
        );
        // The serving certificate (renewed earlier in real life) is due now: wait for propagation.
        let mut due = rolled.clone();
        let (c, k) = new_serving(
            &cas[1],
            &m.ca_key,
            &hosts(),
            t1 - 340 * DAY as i64,
            l.cert_validity,
        )
        .expect("old-CA cert");
        due.tls_crt = c;
        due.tls_key = k;
        let p = plan(Some(&due), &hosts(), t1 + 60, &l).expect("plan");
        assert_eq!(p.write, None, "new CA too fresh to sign");
        assert!(p.recheck_in <= l.propagation);
        let p = plan(Some(&due), &hosts(), t1 + 2 * 3600, &l).expect("plan");
        let renewed = written(p);
        let info = inspect(&renewed.tls_crt, "t").expect("i");
        assert!(info.not_after > t1 + 300 * DAY as i64);
    }

    #[test]
    fn garbage_is_replaced_with_fresh_material() {
        let bad = CertMaterial {
            ca_crt: "junk".into(),
            ca_key: "junk".into(),
            tls_crt: "junk".into(),
            tls_key: "junk".into(),
        };
        let p = plan(Some(&bad), &hosts(), NOW, &Lifetimes::default()).expect("plan");
        assert_eq!(p.reason, "unreadable CA replaced");
        assert!(format!("{bad:?}") == "CertMaterial { .. }");
    }
}
