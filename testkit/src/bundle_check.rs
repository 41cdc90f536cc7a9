//! Semantic checks of an OLM bundle: what the CSV/CRD JSON schemas cannot express and what OLM,
//! `operator-sdk bundle validate`, OperatorHub and preflight enforce (`reference/olm.md` §7C).
//! Each finding names the field and how to fix it. Used by the packaging tests on the committed
//! bundle and on bundles with planted faults; usable on any registry+v1 bundle directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use sandboxed_containers_operator::names::NODE_INSTALLER;
use serde_json::Value;

/// Kinds OLM accepts in `manifests/` (operator-registry `supported_resources.go`), minus
/// NetworkPolicy, which Red Hat's catalog pipeline rejects.
pub const SUPPORTED_KINDS: &[&str] = &[
    "ClusterServiceVersion",
    "CustomResourceDefinition",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ServiceAccount",
    "Service",
    "PrometheusRule",
    "ServiceMonitor",
    "PodMonitor",
    "PodDisruptionBudget",
    "PriorityClass",
    "VerticalPodAutoscaler",
    "ConsoleYAMLSample",
    "ConsoleQuickStart",
    "ConsoleCLIDownload",
    "ConsoleLink",
    "ConsolePlugin",
];

/// API groups every kube-apiserver serves itself (no CRD needed). A bundled object of any other
/// group needs a CRD in the bundle or an entry in `spec.nativeAPIs`: otherwise OLM fails the whole
/// InstallPlan on a cluster without it ("GroupVersionKind … not found on the cluster").
pub const BUILTIN_API_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

pub const INSTALL_MODE_TYPES: [&str; 4] = [
    "OwnNamespace",
    "SingleNamespace",
    "MultiNamespace",
    "AllNamespaces",
];
pub const CAPABILITIES: [&str; 5] = [
    "Basic Install",
    "Seamless Upgrades",
    "Full Lifecycle",
    "Deep Insights",
    "Auto Pilot",
];
pub const CATEGORIES: [&str; 16] = [
    "AI/Machine Learning",
    "Application Runtime",
    "Big Data",
    "Cloud Provider",
    "Developer Tools",
    "Database",
    "Integration & Delivery",
    "Logging & Tracing",
    "Monitoring",
    "Modernization & Migration",
    "Networking",
    "OpenShift Optional",
    "Security",
    "Storage",
    "Streaming & Messaging",
    "Observability",
];
/// Required by preflight `RequiredAnnotations`, values "true" or "false".
pub const REQUIRED_FEATURES: [&str; 7] = [
    "disconnected",
    "fips-compliant",
    "proxy-aware",
    "tls-profiles",
    "token-auth-aws",
    "token-auth-azure",
    "token-auth-gcp",
];
const ICON_MEDIATYPES: [&str; 4] = ["image/gif", "image/jpeg", "image/png", "image/svg+xml"];
const MAX_BUNDLE_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Syntax helpers

/// `MAJOR.MINOR.PATCH[-pre][+build]`, numeric parts without leading zeros.
pub fn is_semver(s: &str) -> bool {
    let (core, _build) = s.split_once('+').unwrap_or((s, ""));
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let numeric = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    nums.len() == 3
        && nums.iter().all(|n| numeric(n))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.split('.').all(|id| {
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        })
}

/// A blang/semver range as OLM parses `olm.skipRange`: space-separated comparators
/// (`>=1.0.0 <1.3.0`), alternatives joined by `||`.
pub fn is_semver_range(s: &str) -> bool {
    !s.trim().is_empty()
        && s.split("||").all(|alt| {
            let parts: Vec<&str> = alt.split_whitespace().collect();
            !parts.is_empty()
                && parts.iter().all(|c| {
                    let v = c.trim_start_matches(['>', '<', '=', '!']);
                    let op = &c[..c.len() - v.len()];
                    ["", "=", "==", "!=", ">", ">=", "<", "<="].contains(&op) && is_semver(v)
                })
        })
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(char::is_whitespace)
                && domain.contains('.')
                && domain.split('.').all(|l| !l.is_empty())
                && !domain.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn is_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split('/').next().unwrap_or_default();
        !host.is_empty() && !s.contains(char::is_whitespace)
    })
}

/// `registry/repo[:tag][@sha256:<64 hex>]`.
fn is_image_reference(s: &str) -> bool {
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    let digest_ok = digest.is_none_or(|d| {
        d.strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let path = name
        .rsplit_once(':')
        .map_or(name, |(p, tag)| if tag.contains('/') { name } else { p });
    digest_ok
        && !path.is_empty()
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        })
        && !s.contains(char::is_whitespace)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Checks one CSV on its own. Returns findings as `field: problem; fix`.
pub fn check_csv(csv: &Value) -> Vec<String> {
    let mut p = Vec::new();
    check_identity(csv, &mut p);
    check_install_modes(csv, &mut p);
    check_examples(csv, &mut p);
    check_deployments(csv, &mut p);
    for (i, w) in array_at(csv, "/spec/webhookdefinitions").iter().enumerate() {
        check_webhook_definition(csv, w, &format!("spec.webhookdefinitions[{i}]"), &mut p);
    }
    check_related_images(csv, &mut p);
    check_hub_metadata(csv, &mut p);
    check_openshift(csv, &mut p);
    check_rbac(csv, &mut p);
    p
}

fn check_identity(csv: &Value, p: &mut Vec<String>) {
    if str_at(csv, "/apiVersion") != Some("operators.coreos.com/v1alpha1")
        || str_at(csv, "/kind") != Some("ClusterServiceVersion")
    {
        p.push(
            "apiVersion/kind: must be operators.coreos.com/v1alpha1 ClusterServiceVersion".into(),
        );
    }
    let name = str_at(csv, "/metadata/name").unwrap_or_default();
    if !is_dns1123_subdomain(name) || name.len() > 63 {
        p.push(format!(
            "metadata.name: {name:?} must be a DNS-1123 subdomain of at most 63 characters; use <package>.v<version>"
        ));
    }
    let version = str_at(csv, "/spec/version").unwrap_or_default();
    if !is_semver(version) {
        p.push(format!(
            "spec.version: {version:?} is not a semantic version; use MAJOR.MINOR.PATCH"
        ));
    } else if !name.ends_with(&format!(".v{version}")) {
        p.push(format!(
            "metadata.name: {name:?} does not end in .v{version}; name the CSV <package>.v<spec.version>"
        ));
    }
    if let Some(replaces) = str_at(csv, "/spec/replaces")
        && (!is_dns1123_subdomain(replaces) || replaces.len() > 63)
    {
        p.push(format!(
            "spec.replaces: {replaces:?} must be a CSV name (DNS-1123 subdomain, at most 63 characters)"
        ));
    }
    match str_at(csv, "/spec/minKubeVersion") {
        None => p.push("spec.minKubeVersion: missing; set the oldest Kubernetes version supported, e.g. 1.27.0".into()),
        Some(v) if !is_semver(v) => p.push(format!(
            "spec.minKubeVersion: {v:?} is not a full semantic version; write e.g. 1.27.0"
        )),
        Some(_) => {}
    }
    let annotations = csv
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    for (key, _) in annotations.into_iter().flatten() {
        for canonical in [
            "olm.skipRange",
            "olm.operatorGroup",
            "olm.operatorNamespace",
            "olm.targetNamespaces",
            "olm.providedAPIs",
        ] {
            if key != canonical && key.eq_ignore_ascii_case(canonical) {
                p.push(format!(
                    "metadata.annotations.{key}: wrong case; OLM reads {canonical}"
                ));
            }
        }
        if key == "olm.properties" {
            p.push("metadata.annotations.olm.properties: deprecated; move properties to metadata/properties.yaml".into());
        }
    }
    if let Some(range) = str_at(csv, "/metadata/annotations/olm.skipRange")
        && !is_semver_range(range)
    {
        p.push(format!(
            "metadata.annotations.olm.skipRange: {range:?} is not a semver range; write e.g. '>=0.1.0 <0.2.0'"
        ));
    }
    if csv.pointer("/metadata/annotations/olm.skipRange").is_some()
        && csv.pointer("/spec/replaces").is_none()
    {
        p.push("metadata.annotations.olm.skipRange: set without spec.replaces, which prunes the skipped versions from the graph; set spec.replaces to the previous CSV".into());
    }
}

fn check_install_modes(csv: &Value, p: &mut Vec<String>) {
    let modes = array_at(csv, "/spec/installModes");
    if modes.is_empty() {
        p.push("spec.installModes: empty; list all four modes with supported true/false".into());
        return;
    }
    let mut seen = BTreeSet::new();
    let mut supported = Vec::new();
    for (i, m) in modes.iter().enumerate() {
        let t = m["type"].as_str().unwrap_or_default();
        if !INSTALL_MODE_TYPES.contains(&t) {
            p.push(format!(
                "spec.installModes[{i}].type: {t:?} is not an install mode; use one of {}",
                INSTALL_MODE_TYPES.join(", ")
            ));
        }
        if !seen.insert(t) {
            p.push(format!("spec.installModes[{i}].type: {t} is listed twice"));
        }
        if m["supported"] == Value::Bool(true) {
            supported.push(t);
        }
    }
    if supported.is_empty() {
        p.push(
            "spec.installModes: no mode is supported; set supported: true on at least one".into(),
        );
    }
    let conversion = array_at(csv, "/spec/webhookdefinitions")
        .iter()
        .any(|w| w["type"] == "ConversionWebhook");
    if conversion && supported != ["AllNamespaces"] {
        p.push(
            "spec.installModes: a CSV with a conversion webhook must support only AllNamespaces"
                .into(),
        );
    }
}

fn owned_gvks(csv: &Value) -> Vec<(String, String, String)> {
    array_at(csv, "/spec/customresourcedefinitions/owned")
        .iter()
        .map(|o| {
            let name = o["name"].as_str().unwrap_or_default();
            let group = name.split_once('.').map_or("", |(_, g)| g);
            (
                group.to_string(),
                o["version"].as_str().unwrap_or_default().to_string(),
                o["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The alm-examples entries (empty when absent or not JSON; `check_csv` reports that).
pub fn alm_examples(csv: &Value) -> Vec<Value> {
    str_at(csv, "/metadata/annotations/alm-examples")
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default()
}

fn check_examples(csv: &Value, p: &mut Vec<String>) {
    let Some(raw) = str_at(csv, "/metadata/annotations/alm-examples") else {
        p.push(
            "metadata.annotations.alm-examples: missing; add one example CR per owned CRD".into(),
        );
        return;
    };
    let examples: Vec<Value> = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => {
            p.push(format!(
                "metadata.annotations.alm-examples: not a JSON array of objects ({e})"
            ));
            return;
        }
    };
    let owned = owned_gvks(csv);
    let mut covered = BTreeSet::new();
    for (i, ex) in examples.iter().enumerate() {
        let api = ex["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api.split_once('/').unwrap_or(("", api));
        let kind = ex["kind"].as_str().unwrap_or_default();
        let gvk = (group.to_string(), version.to_string(), kind.to_string());
        if !owned.contains(&gvk) {
            p.push(format!(
                "metadata.annotations.alm-examples[{i}]: {api} {kind} is not an owned CRD of this CSV"
            ));
        }
        covered.insert(gvk);
    }
    for gvk in owned.iter().filter(|g| !covered.contains(*g)) {
        p.push(format!(
            "metadata.annotations.alm-examples: no example for owned {}/{} {}",
            gvk.0, gvk.1, gvk.2
        ));
    }
}

fn check_deployments(csv: &Value, p: &mut Vec<String>) {
    if str_at(csv, "/spec/install/strategy") != Some("deployment") {
        p.push("spec.install.strategy: must be \"deployment\"".into());
    }
    let deployments = array_at(csv, "/spec/install/spec/deployments");
    if deployments.is_empty() {
        p.push("spec.install.spec.deployments: empty; the operator Deployment goes here".into());
    }
    let mut names = BTreeSet::new();
    for (i, d) in deployments.iter().enumerate() {
        let at = format!("spec.install.spec.deployments[{i}]");
        let name = d["name"].as_str().unwrap_or_default();
        if !is_dns1123_label(name) || name.len() > 55 {
            p.push(format!(
                "{at}.name: {name:?} must be a DNS-1123 label of at most 55 characters without dots (OLM derives Service names from it)"
            ));
        }
        if !names.insert(name) {
            p.push(format!("{at}.name: {name} is used twice"));
        }
        let selector = d
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object);
        let labels = d
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        match (selector, labels) {
            (Some(sel), Some(labels)) if !sel.is_empty() => {
                for (k, v) in sel {
                    if labels.get(k) != Some(v) {
                        p.push(format!(
                            "{at}.spec.selector.matchLabels.{k}: not carried by the pod template labels"
                        ));
                    }
                }
            }
            _ => p.push(format!(
                "{at}.spec.selector: needs matchLabels that the pod template labels carry"
            )),
        }
        for (c_i, c) in array_at(d, "/spec/template/spec/containers")
            .iter()
            .enumerate()
        {
            for res in ["cpu", "memory"] {
                if c.pointer(&format!("/resources/requests/{res}")).is_none() {
                    p.push(format!(
                        "{at}.spec.template.spec.containers[{c_i}].resources.requests.{res}: missing; every container needs cpu and memory requests"
                    ));
                }
            }
        }
    }
}

/// Whether OLM refuses a webhook rule (OLM v0 `ValidWebhookRules`, stricter OLM v1 set).
pub fn check_webhook_rules(rules: &[Value], at: &str) -> Vec<String> {
    let mut p = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let groups: Vec<&str> = array_at(rule, "/apiGroups")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let resources: Vec<String> = array_at(rule, "/resources")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_lowercase)
            .collect();
        for g in &groups {
            if g.contains('*') {
                p.push(format!(
                    "{at}.rules[{i}].apiGroups: \"*\" is forbidden by OLM; list the groups"
                ));
            }
            if *g == "operators.coreos.com" || *g == "olm.operatorframework.io" {
                p.push(format!(
                    "{at}.rules[{i}].apiGroups: intercepting {g} is forbidden by OLM (it could block OLM itself)"
                ));
            }
            if *g == "admissionregistration.k8s.io" {
                for r in &resources {
                    let base = r
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches('s');
                    if r.contains('*')
                        || base == "mutatingwebhookconfiguration"
                        || base == "validatingwebhookconfiguration"
                    {
                        p.push(format!(
                            "{at}.rules[{i}].resources: intercepting admissionregistration.k8s.io {r} is forbidden by OLM"
                        ));
                    }
                }
            }
        }
        if resources.iter().any(|r| r == "*" || r == "*/*") {
            p.push(format!(
                "{at}.rules[{i}].resources: \"*\" intercepts every resource; list them"
            ));
        }
    }
    p
}

fn check_webhook_definition(csv: &Value, w: &Value, at: &str, p: &mut Vec<String>) {
    let t = w["type"].as_str().unwrap_or_default();
    if ![
        "ValidatingAdmissionWebhook",
        "MutatingAdmissionWebhook",
        "ConversionWebhook",
    ]
    .contains(&t)
    {
        p.push(format!("{at}.type: {t:?} is not a webhook type"));
    }
    let name = w["generateName"].as_str().unwrap_or_default();
    if !is_dns1123_subdomain(name) || name.split('.').count() < 3 {
        p.push(format!(
            "{at}.generateName: {name:?} must be a fully qualified DNS-1123 name with at least three labels, e.g. vkataconfig.kb.io"
        ));
    }
    let dups = array_at(csv, "/spec/webhookdefinitions")
        .iter()
        .filter(|o| o["generateName"].as_str() == Some(name))
        .count();
    if dups > 1 {
        p.push(format!(
            "{at}.generateName: {name} is used by {dups} webhook definitions; OLM fails the CSV"
        ));
    }
    let deployment = w["deploymentName"].as_str().unwrap_or_default();
    if !array_at(csv, "/spec/install/spec/deployments")
        .iter()
        .any(|d| d["name"].as_str() == Some(deployment))
    {
        p.push(format!(
            "{at}.deploymentName: {deployment:?} is not a deployment of the install strategy"
        ));
    }
    let side_effects = w["sideEffects"].as_str().unwrap_or_default();
    if t != "ConversionWebhook" && !["None", "NoneOnDryRun"].contains(&side_effects) {
        p.push(format!(
            "{at}.sideEffects: {side_effects:?}; use None or NoneOnDryRun"
        ));
    }
    let versions: Vec<&str> = array_at(w, "/admissionReviewVersions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if versions != ["v1"] {
        p.push(format!(
            "{at}.admissionReviewVersions: {versions:?}; use [v1]"
        ));
    }
    if let Some(timeout) = w.get("timeoutSeconds").and_then(Value::as_i64)
        && !(1..=30).contains(&timeout)
    {
        p.push(format!("{at}.timeoutSeconds: {timeout} is outside 1..30"));
    }
    p.extend(check_webhook_rules(array_at(w, "/rules"), at));
    let owned: Vec<&str> = array_at(csv, "/spec/customresourcedefinitions/owned")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for crd in array_at(w, "/conversionCRDs")
        .iter()
        .filter_map(Value::as_str)
    {
        if !owned.contains(&crd) {
            p.push(format!("{at}.conversionCRDs: {crd} is not an owned CRD"));
        }
    }
}

fn check_related_images(csv: &Value, p: &mut Vec<String>) {
    let related: Vec<&str> = array_at(csv, "/spec/relatedImages")
        .iter()
        .filter_map(|r| r["image"].as_str())
        .collect();
    if related.is_empty() {
        p.push(
            "spec.relatedImages: empty; list every image the operator runs, including its own"
                .into(),
        );
    }
    for img in &related {
        if !is_image_reference(img) {
            p.push(format!(
                "spec.relatedImages: {img:?} is not an image reference"
            ));
        }
    }
    let mut used: Vec<String> = Vec::new();
    if let Some(img) = str_at(csv, "/metadata/annotations/containerImage") {
        used.push(img.to_string());
    }
    for d in array_at(csv, "/spec/install/spec/deployments") {
        for c in array_at(d, "/spec/template/spec/containers") {
            if let Some(img) = c["image"].as_str() {
                used.push(img.to_string());
            }
        }
    }
    for img in used {
        if !related.contains(&img.as_str()) {
            p.push(format!("spec.relatedImages: {img} is used but not listed"));
        }
    }
    if str_at(
        csv,
        "/metadata/annotations/features.operators.openshift.io~1disconnected",
    ) == Some("true")
    {
        for img in related.iter().filter(|i| !i.contains("@sha256:")) {
            p.push(format!(
                "spec.relatedImages: {img} is not pinned by digest, but the CSV claims disconnected support; pin @sha256: or set disconnected \"false\""
            ));
        }
    }
}

fn check_hub_metadata(csv: &Value, p: &mut Vec<String>) {
    let display = str_at(csv, "/spec/displayName").unwrap_or_default();
    if !(3..=50).contains(&display.chars().count()) {
        p.push(format!(
            "spec.displayName: {display:?} must be 3 to 50 characters"
        ));
    }
    if str_at(csv, "/spec/description").unwrap_or_default().len() < 20 {
        p.push("spec.description: missing or shorter than 20 characters".into());
    }
    if str_at(csv, "/spec/provider/name")
        .unwrap_or_default()
        .chars()
        .count()
        < 3
    {
        p.push("spec.provider.name: missing or shorter than 3 characters".into());
    }
    let maintainers = array_at(csv, "/spec/maintainers");
    if maintainers.is_empty() {
        p.push("spec.maintainers: list at least one maintainer with name and email".into());
    }
    for (i, m) in maintainers.iter().enumerate() {
        if m["name"].as_str().unwrap_or_default().is_empty()
            || !is_email(m["email"].as_str().unwrap_or_default())
        {
            p.push(format!(
                "spec.maintainers[{i}]: needs a name and a valid email"
            ));
        }
    }
    let links = array_at(csv, "/spec/links");
    if links.is_empty() {
        p.push("spec.links: list at least one link".into());
    }
    for (i, l) in links.iter().enumerate() {
        if l["name"].as_str().unwrap_or_default().is_empty()
            || !is_url(l["url"].as_str().unwrap_or_default())
        {
            p.push(format!("spec.links[{i}]: needs a name and an http(s) url"));
        }
    }
    let icons = array_at(csv, "/spec/icon");
    if icons.len() != 1 {
        p.push(format!(
            "spec.icon: has {} entries; exactly one is required",
            icons.len()
        ));
    }
    for (i, icon) in icons.iter().enumerate() {
        let media = icon["mediatype"].as_str().unwrap_or_default();
        if !ICON_MEDIATYPES.contains(&media) {
            p.push(format!(
                "spec.icon[{i}].mediatype: {media:?}; use one of {}",
                ICON_MEDIATYPES.join(", ")
            ));
        }
        let data = icon["base64data"].as_str().unwrap_or_default();
        if data.is_empty()
            || base64::engine::general_purpose::STANDARD
                .decode(data)
                .is_err()
        {
            p.push(format!("spec.icon[{i}].base64data: not valid base64"));
        }
    }
    if array_at(csv, "/spec/keywords").is_empty() {
        p.push("spec.keywords: add search keywords".into());
    }
    if str_at(csv, "/spec/maturity").unwrap_or_default().is_empty() {
        p.push("spec.maturity: set alpha, beta or stable".into());
    }
    let ann = |k: &str| {
        str_at(
            csv,
            &format!("/metadata/annotations/{}", k.replace('/', "~1")),
        )
    };
    match ann("capabilities") {
        Some(c) if CAPABILITIES.contains(&c) => {}
        other => p.push(format!(
            "metadata.annotations.capabilities: {other:?}; use one of {}",
            CAPABILITIES.join(", ")
        )),
    }
    match ann("categories") {
        Some(cats) => {
            for c in cats.split(',').map(str::trim) {
                if !CATEGORIES.contains(&c) {
                    p.push(format!(
                        "metadata.annotations.categories: {c:?} is not an OperatorHub category"
                    ));
                }
            }
        }
        None => p.push("metadata.annotations.categories: missing".into()),
    }
    match ann("createdAt") {
        Some(t) if t.parse::<jiff::Timestamp>().is_ok() => {}
        other => p.push(format!(
            "metadata.annotations.createdAt: {other:?} is not an RFC 3339 time; write e.g. 2026-01-31T12:00:00Z"
        )),
    }
    for key in ["containerImage", "description", "repository", "support"] {
        if ann(key).unwrap_or_default().is_empty() {
            p.push(format!("metadata.annotations.{key}: missing"));
        }
    }
}

fn check_openshift(csv: &Value, p: &mut Vec<String>) {
    let annotations = csv
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let get = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    for f in REQUIRED_FEATURES {
        let key = format!("features.operators.openshift.io/{f}");
        match get(&key) {
            Some("true" | "false") => {}
            other => p.push(format!(
                "metadata.annotations.{key}: {other:?}; must be \"true\" or \"false\""
            )),
        }
    }
    if get("operators.openshift.io/infrastructure-features").is_some() {
        p.push("metadata.annotations.operators.openshift.io/infrastructure-features: deprecated; use the features.operators.openshift.io/* annotations".into());
    }
    if let Some(v) = get("operators.openshift.io/valid-subscription")
        && serde_json::from_str::<Vec<String>>(v).is_err()
    {
        p.push("metadata.annotations.operators.openshift.io/valid-subscription: must be a JSON array of strings".into());
    }
}

fn check_rbac(csv: &Value, p: &mut Vec<String>) {
    let deployment_sas: Vec<&str> = array_at(csv, "/spec/install/spec/deployments")
        .iter()
        .filter_map(|d| str_at(d, "/spec/template/spec/serviceAccountName"))
        .collect();
    for (section, cluster) in [("clusterPermissions", true), ("permissions", false)] {
        for (i, perm) in array_at(csv, &format!("/spec/install/spec/{section}"))
            .iter()
            .enumerate()
        {
            let sa = perm["serviceAccountName"].as_str().unwrap_or_default();
            // The node installer's ServiceAccount serves the operator's DaemonSet, not a
            // deployment of the CSV; OLM creates it like the others.
            if !deployment_sas.contains(&sa) && sa != NODE_INSTALLER {
                p.push(format!(
                    "spec.install.spec.{section}[{i}].serviceAccountName: {sa:?} is not the serviceAccountName of any deployment; the operator would not get these permissions"
                ));
            }
            for (r_i, rule) in array_at(perm, "/rules").iter().enumerate() {
                let at = format!("spec.install.spec.{section}[{i}].rules[{r_i}]");
                let list = |k: &str| -> Vec<&str> {
                    array_at(rule, k).iter().filter_map(Value::as_str).collect()
                };
                let (groups, resources, verbs) =
                    (list("/apiGroups"), list("/resources"), list("/verbs"));
                if groups.contains(&"*") || resources.contains(&"*") || verbs.contains(&"*") {
                    p.push(format!(
                        "{at}: wildcard grant; list groups, resources and verbs explicitly"
                    ));
                }
                if groups.contains(&"apiextensions.k8s.io")
                    && resources.contains(&"customresourcedefinitions")
                    && verbs.iter().any(|v| {
                        ["create", "update", "patch", "delete", "deletecollection"].contains(v)
                    })
                {
                    p.push(format!(
                        "{at}: the operator must not create or change CRDs; OLM installs them"
                    ));
                }
                if cluster && groups.contains(&"") && resources.contains(&"secrets") {
                    p.push(format!("{at}: Secrets granted cluster-wide; grant them in permissions (operator namespace) only"));
                }
            }
        }
    }
    // OLM keeps a CSV Pending while a native API is not served: an MCO kind there would stop
    // the install on every cluster without the MCO, where the node installer applies.
    for native in array_at(csv, "/spec/nativeAPIs") {
        if native["group"] == "machineconfiguration.openshift.io" {
            p.push(format!(
                "spec.nativeAPIs: {} (machineconfiguration.openshift.io) must not be required: OLM would not install the operator on Kubernetes without the Machine Config Operator",
                native["kind"].as_str().unwrap_or_default()
            ));
        }
    }
    for required in array_at(csv, "/spec/customresourcedefinitions/required") {
        if required["name"]
            .as_str()
            .unwrap_or_default()
            .ends_with("machineconfiguration.openshift.io")
        {
            p.push("spec.customresourcedefinitions.required: MCO APIs are platform APIs; list them in spec.nativeAPIs".into());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bundle

/// Properties of a schema path like `kataNodes.nodeCount` under `spec`/`status` of a CRD version.
fn schema_has_path(crd: &Value, version: &str, root: &str, path: &str) -> bool {
    let Some(v) = array_at(crd, "/spec/versions")
        .iter()
        .find(|v| v["name"] == version)
    else {
        return false;
    };
    let mut node = &v["schema"]["openAPIV3Schema"]["properties"][root];
    for seg in path.split('.') {
        let seg = seg.split('[').next().unwrap_or(seg);
        if node.get("properties").is_none() && node.get("items").is_some() {
            node = &node["items"];
        }
        node = &node["properties"][seg];
        if node.is_null() {
            return false;
        }
    }
    true
}

/// Structural-schema rules the API server enforces on CRDs and `operator-sdk bundle validate`
/// skips: every node has a `type` (unless int-or-string or preserve-unknown-fields), arrays have
/// `items`, and `properties` and `additionalProperties` are not combined.
pub fn check_structural(node: &Value, at: &str, p: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool) == Some(true);
    if obj.get("type").is_none()
        && !flag("x-kubernetes-int-or-string")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        p.push(format!(
            "{at}: no type; a structural schema needs one on every node"
        ));
    }
    if obj.get("type").and_then(Value::as_str) == Some("array") && obj.get("items").is_none() {
        p.push(format!("{at}: type array without items"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        p.push(format!(
            "{at}: properties and additionalProperties are mutually exclusive"
        ));
    }
    for (k, v) in obj
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        check_structural(v, &format!("{at}.properties.{k}"), p);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key).filter(|c| c.is_object()) {
            check_structural(child, &format!("{at}.{key}"), p);
        }
    }
}

fn check_crds(csv: &Value, crds: &BTreeMap<String, Value>, p: &mut Vec<String>) {
    for (name, crd) in crds {
        for (i, v) in array_at(crd, "/spec/versions").iter().enumerate() {
            match v.pointer("/schema/openAPIV3Schema") {
                Some(schema) => check_structural(
                    schema,
                    &format!("CRD {name} spec.versions[{i}].schema.openAPIV3Schema"),
                    p,
                ),
                None => p.push(format!("CRD {name} spec.versions[{i}]: no openAPIV3Schema")),
            }
        }
    }
    let owned = array_at(csv, "/spec/customresourcedefinitions/owned");
    let mut owned_names = BTreeSet::new();
    for (i, o) in owned.iter().enumerate() {
        let at = format!("spec.customresourcedefinitions.owned[{i}]");
        let name = o["name"].as_str().unwrap_or_default();
        let version = o["version"].as_str().unwrap_or_default();
        if !owned_names.insert(name) {
            p.push(format!("{at}.name: {name} is listed twice"));
        }
        let Some(crd) = crds.get(name) else {
            p.push(format!(
                "{at}.name: no CustomResourceDefinition {name} in manifests/"
            ));
            continue;
        };
        let plural = str_at(crd, "/spec/names/plural").unwrap_or_default();
        let group = str_at(crd, "/spec/group").unwrap_or_default();
        if name != format!("{plural}.{group}") {
            p.push(format!(
                "{at}.name: {name} is not <plural>.<group> of the CRD ({plural}.{group})"
            ));
        }
        if o["kind"].as_str() != str_at(crd, "/spec/names/kind") {
            p.push(format!("{at}.kind: does not match the CRD's kind"));
        }
        let served = array_at(crd, "/spec/versions")
            .iter()
            .any(|v| v["name"] == version && v["served"] == true);
        if !served {
            p.push(format!(
                "{at}.version: {version} is not a served version of {name}"
            ));
        }
        for (section, root) in [("specDescriptors", "spec"), ("statusDescriptors", "status")] {
            for (d_i, d) in array_at(o, &format!("/{section}")).iter().enumerate() {
                let path = d["path"].as_str().unwrap_or_default();
                if !schema_has_path(crd, version, root, path) {
                    p.push(format!(
                        "{at}.{section}[{d_i}].path: {root}.{path} does not exist in the CRD schema (renamed field?)"
                    ));
                }
            }
        }
        if let Some(desc) = o.get("description").and_then(Value::as_str)
            && desc.is_empty()
        {
            p.push(format!("{at}.description: empty"));
        }
    }
    for name in crds.keys() {
        if !owned_names.contains(name.as_str()) {
            p.push(format!("manifests/: CRD {name} is not owned by the CSV; add it to spec.customresourcedefinitions.owned"));
        }
    }
    // Every top-level spec field of an example needs a spec descriptor (scorecard).
    for (i, ex) in alm_examples(csv).iter().enumerate() {
        let kind = ex["kind"].as_str().unwrap_or_default();
        let Some(o) = owned.iter().find(|o| o["kind"].as_str() == Some(kind)) else {
            continue;
        };
        let described: BTreeSet<&str> = array_at(o, "/specDescriptors")
            .iter()
            .filter_map(|d| d["path"].as_str())
            .map(|p| p.split('.').next().unwrap_or(p))
            .collect();
        for field in ex["spec"].as_object().into_iter().flatten().map(|(k, _)| k) {
            if !described.contains(field.as_str()) {
                p.push(format!(
                    "metadata.annotations.alm-examples[{i}].spec.{field}: no specDescriptor for it (scorecard olm-spec-descriptors)"
                ));
            }
        }
    }
}

fn parse_labels(dockerfile: &str) -> BTreeMap<String, String> {
    dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LABEL "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

fn check_annotations(
    files: &BTreeMap<PathBuf, &str>,
    dockerfile: &str,
    p: &mut Vec<String>,
) -> Option<String> {
    let Some(raw) = files.get(Path::new("metadata/annotations.yaml")) else {
        p.push("metadata/annotations.yaml: missing".into());
        return None;
    };
    let doc: Value = match serde_yaml::from_str(raw) {
        Ok(v) => v,
        Err(e) => {
            p.push(format!("metadata/annotations.yaml: not YAML ({e})"));
            return None;
        }
    };
    let Some(ann) = doc["annotations"].as_object() else {
        p.push("metadata/annotations.yaml: needs an `annotations` map".into());
        return None;
    };
    let ann: BTreeMap<String, String> = ann
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let get = |k: &str| ann.get(k).map(String::as_str).unwrap_or_default();
    for (key, want) in [
        (
            "operators.operatorframework.io.bundle.mediatype.v1",
            "registry+v1",
        ),
        (
            "operators.operatorframework.io.bundle.manifests.v1",
            "manifests/",
        ),
        (
            "operators.operatorframework.io.bundle.metadata.v1",
            "metadata/",
        ),
    ] {
        if get(key) != want {
            p.push(format!(
                "metadata/annotations.yaml: {key} is {:?}; must be {want}",
                get(key)
            ));
        }
    }
    let package = get("operators.operatorframework.io.bundle.package.v1").to_string();
    if package.is_empty() {
        p.push(
            "metadata/annotations.yaml: operators.operatorframework.io.bundle.package.v1 missing"
                .into(),
        );
    }
    let channels: Vec<&str> = get("operators.operatorframework.io.bundle.channels.v1")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        p.push("metadata/annotations.yaml: operators.operatorframework.io.bundle.channels.v1 must list a channel".into());
    }
    if let Some(default) = ann.get("operators.operatorframework.io.bundle.channel.default.v1")
        && !channels.contains(&default.as_str())
    {
        p.push(format!("metadata/annotations.yaml: default channel {default:?} is not one of the channels {channels:?}"));
    }
    let has_scorecard = files.keys().any(|k| k.starts_with("tests/scorecard"));
    if has_scorecard && get("operators.operatorframework.io.test.config.v1") != "tests/scorecard/" {
        p.push("metadata/annotations.yaml: tests/scorecard exists; set operators.operatorframework.io.test.mediatype.v1: scorecard+v1 and test.config.v1: tests/scorecard/".into());
    }
    if get("com.redhat.openshift.versions").is_empty() {
        p.push("metadata/annotations.yaml: com.redhat.openshift.versions missing (OpenShift catalogs need it)".into());
    }
    let labels = parse_labels(dockerfile);
    for (k, v) in &ann {
        match labels.get(k) {
            Some(l) if l == v => {}
            Some(l) => p.push(format!(
                "bundle.Dockerfile: LABEL {k}={l} differs from annotations.yaml ({v})"
            )),
            None => p.push(format!(
                "bundle.Dockerfile: LABEL {k} missing (annotations.yaml has it)"
            )),
        }
    }
    for k in labels.keys().filter(|k| !ann.contains_key(*k)) {
        p.push(format!(
            "bundle.Dockerfile: LABEL {k} is not in annotations.yaml"
        ));
    }
    Some(package)
}

/// Every bundled object whose API is neither built in, nor defined by a CRD of the bundle, nor
/// declared in the CSV's `spec.nativeAPIs`: OLM cannot install the bundle where that API is
/// missing. `objects` are `(path, object)` of `manifests/` (CSV and CRDs included).
pub fn check_required_apis(objects: &[(String, Value)], p: &mut Vec<String>) {
    let group_kind = |api_version: &str, kind: &str| {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        (group.to_string(), kind.to_string())
    };
    let mut provided: BTreeSet<(String, String)> = BTreeSet::new();
    for (_, obj) in objects {
        match obj["kind"].as_str() {
            Some("CustomResourceDefinition") => {
                provided.insert((
                    str_at(obj, "/spec/group").unwrap_or_default().to_string(),
                    str_at(obj, "/spec/names/kind")
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            Some("ClusterServiceVersion") => {
                for api in array_at(obj, "/spec/nativeAPIs") {
                    provided.insert((
                        api["group"].as_str().unwrap_or_default().to_string(),
                        api["kind"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
            _ => {}
        }
    }
    for (at, obj) in objects {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (group, kind) = group_kind(api_version, kind);
        if kind == "ClusterServiceVersion" && group == "operators.coreos.com" {
            continue;
        }
        if BUILTIN_API_GROUPS.contains(&group.as_str())
            || provided.contains(&(group.clone(), kind.clone()))
        {
            continue;
        }
        p.push(format!(
            "{at}: {kind} ({api_version}) needs a CRD that is neither in the bundle nor in spec.nativeAPIs, so OLM fails the whole InstallPlan on a cluster without it (\"GroupVersionKind {api_version}, Kind={kind} not found on the cluster\"); let the operator create it at runtime when the API is served, or declare it in spec.nativeAPIs"
        ));
    }
}

/// Checks a bundle given its files (paths relative to the bundle directory) and the
/// `bundle.Dockerfile` that builds it.
pub fn check_bundle(files: &[(PathBuf, String)], dockerfile: &str) -> Vec<String> {
    let mut p = Vec::new();
    let by_path: BTreeMap<PathBuf, &str> =
        files.iter().map(|(k, v)| (k.clone(), v.as_str())).collect();
    let package = check_annotations(&by_path, dockerfile, &mut p);
    let mut csvs = Vec::new();
    let mut crds = BTreeMap::new();
    let mut service_accounts = Vec::new();
    let mut objects = Vec::new();
    let mut size = 0;
    for (path, content) in files {
        let at = path.display();
        let parts: Vec<_> = path.components().collect();
        if parts.first() != Some(&Component::Normal("manifests".as_ref())) {
            continue;
        }
        size += content.len();
        if parts.len() != 2 {
            p.push(format!("{at}: manifests/ must be flat (no subdirectories)"));
        }
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            p.push(format!("{at}: hidden files are not allowed in manifests/"));
            continue;
        }
        let obj: Value = match serde_yaml::from_str(content) {
            Ok(v) => v,
            Err(e) => {
                p.push(format!("{at}: not a single YAML object ({e})"));
                continue;
            }
        };
        let kind = obj["kind"].as_str().unwrap_or_default();
        if !SUPPORTED_KINDS.contains(&kind) {
            p.push(format!(
                "{at}: kind {kind:?} is not allowed in a registry+v1 bundle; Deployments go in the CSV install strategy, webhook configurations in webhookdefinitions, MCO objects are created by the operator"
            ));
        }
        let name = str_at(&obj, "/metadata/name").unwrap_or_default();
        if !is_dns1123_subdomain(name) {
            p.push(format!(
                "{at}: metadata.name {name:?} is not a DNS-1123 subdomain"
            ));
        }
        objects.push((at.to_string(), obj.clone()));
        match kind {
            "ClusterServiceVersion" => csvs.push(obj),
            "CustomResourceDefinition" => {
                crds.insert(name.to_string(), obj);
            }
            "ServiceAccount" => service_accounts.push(name.to_string()),
            _ => {}
        }
    }
    check_required_apis(&objects, &mut p);
    if size > MAX_BUNDLE_BYTES {
        p.push(format!(
            "manifests/: {size} bytes exceeds OLM's 1 MiB bundle limit"
        ));
    }
    if csvs.len() != 1 {
        p.push(format!(
            "manifests/: {} ClusterServiceVersions; exactly one is required",
            csvs.len()
        ));
    }
    if let Some(csv) = csvs.first() {
        p.extend(check_csv(csv));
        check_crds(csv, &crds, &mut p);
        if let Some(package) = package {
            let name = str_at(csv, "/metadata/name").unwrap_or_default();
            if !name.starts_with(&format!("{package}.")) {
                p.push(format!(
                    "metadata.name: {name} does not start with the package name {package}"
                ));
            }
        }
        for d in array_at(csv, "/spec/install/spec/deployments") {
            let sa = str_at(d, "/spec/template/spec/serviceAccountName").unwrap_or_default();
            if service_accounts.iter().any(|s| s == sa) {
                p.push(format!(
                    "manifests/: ServiceAccount {sa} clashes with the deployment's serviceAccountName; OLM creates it, remove the manifest"
                ));
            }
        }
    }
    p
}

/// Reads a bundle directory the way OLM does (every regular file, relative paths).
pub fn read_bundle_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.push((rel, std::fs::read_to_string(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod required_api_tests {
    use super::*;
    use serde_json::json;

    fn obj(api_version: &str, kind: &str) -> (String, Value) {
        (
            format!("manifests/{kind}.yaml"),
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}),
        )
    }

    #[test]
    fn built_in_apis_need_nothing_and_crd_kinds_need_a_source() {
        let mut p = Vec::new();
        check_required_apis(
            &[
                obj("v1", "Service"),
                obj("rbac.authorization.k8s.io/v1", "Role"),
                obj("policy/v1", "PodDisruptionBudget"),
                obj("autoscaling.k8s.io/v1", "VerticalPodAutoscaler"),
                obj("console.openshift.io/v1", "ConsoleYAMLSample"),
            ],
            &mut p,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("manifests/VerticalPodAutoscaler.yaml: VerticalPodAutoscaler (autoscaling.k8s.io/v1) needs a CRD"), "{p:?}");
        assert!(
            p[1].contains("ConsoleYAMLSample (console.openshift.io/v1)"),
            "{p:?}"
        );
    }

    #[test]
    fn a_bundled_crd_or_a_native_api_provides_the_kind() {
        let crd = (
            "manifests/crd.yaml".to_string(),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "spec": {"group": "example.com", "names": {"kind": "Widget"}}}),
        );
        let csv = (
            "manifests/csv.yaml".to_string(),
            json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
                   "spec": {"nativeAPIs": [{"group": "console.openshift.io", "version": "v1", "kind": "ConsoleYAMLSample"}]}}),
        );
        let mut p = Vec::new();
        check_required_apis(
            &[
                crd,
                csv,
                obj("example.com/v1", "Widget"),
                obj("console.openshift.io/v1", "ConsoleYAMLSample"),
            ],
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandboxed_containers_operator::packaging::{self, bundle_dockerfile, bundle_files};
    use serde_json::json;

    fn generated() -> Vec<(PathBuf, String)> {
        bundle_files().expect("bundle")
    }

    fn csv_path() -> PathBuf {
        PathBuf::from("manifests").join(packaging::csv_file())
    }

    /// The generated bundle with its CSV changed by `f`.
    fn with_csv(mut f: impl FnMut(&mut Value)) -> Vec<String> {
        let mut files = generated();
        for (path, content) in &mut files {
            if *path == csv_path() {
                let mut csv: Value = serde_yaml::from_str(content).expect("csv");
                f(&mut csv);
                *content = serde_yaml::to_string(&csv).expect("yaml");
            }
        }
        check_bundle(&files, &bundle_dockerfile())
    }

    fn assert_finding(findings: &[String], needle: &str) {
        assert!(
            findings.iter().any(|f| f.contains(needle)),
            "expected a finding containing {needle:?}, got {findings:#?}"
        );
    }

    #[test]
    fn generated_bundle_passes() {
        let findings = check_bundle(&generated(), &bundle_dockerfile());
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_release_with_an_upgrade_edge_passes() {
        let next = packaging::Release {
            version: "0.2.0",
            previous: Some("0.1.0"),
            skip_floor: None,
            created_at: "2027-01-01T00:00:00Z",
        };
        let csv = packaging::csv::cluster_service_version(&next).expect("csv");
        let findings = check_csv(&csv);
        assert!(findings.is_empty(), "{findings:#?}");
        let mut bad = csv.clone();
        bad["metadata"]["annotations"]["olm.skipRange"] = json!(">=0.1 <0.2.0");
        assert_finding(
            &check_csv(&bad),
            "olm.skipRange: \">=0.1 <0.2.0\" is not a semver range",
        );
        let mut bad = csv;
        bad["spec"]["replaces"] = json!("Sandboxed.v0.1.0");
        assert_finding(
            &check_csv(&bad),
            "spec.replaces: \"Sandboxed.v0.1.0\" must be a CSV name",
        );
    }

    #[test]
    fn semver_and_ranges() {
        for ok in ["0.1.0", "1.27.0", "1.0.0-rc.1", "1.0.0+build.5"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["1.27", "v1.0.0", "01.0.0", "1.0.0-", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
        assert!(is_semver_range(">=0.1.0 <0.2.0"));
        assert!(is_semver_range("<1.0.0 || >=2.0.0"));
        assert!(!is_semver_range(">=0.1 <0.2.0"));
        assert!(!is_semver_range("=>0.1.0"));
        assert!(is_semver_range("0.1.0"));
        assert!(!is_semver_range(""));
    }

    #[test]
    fn image_references() {
        assert!(is_image_reference("quay.io/a/b:v1"));
        assert!(is_image_reference("localhost:5000/a/b"));
        assert!(is_image_reference(&format!(
            "quay.io/a/b@sha256:{}",
            "a".repeat(64)
        )));
        assert!(!is_image_reference("quay.io/a/b@sha256:abc"));
        assert!(!is_image_reference("quay.io/a b"));
    }

    #[test]
    fn planted_csv_faults_are_reported() {
        type Plant = fn(&mut Value);
        let cases: &[(Plant, &str)] = &[
            (
                |c| c["metadata"]["name"] = json!("Sandboxed_Operator"),
                "metadata.name: \"Sandboxed_Operator\" must be a DNS-1123 subdomain",
            ),
            (
                |c| c["spec"]["version"] = json!("0.1"),
                "spec.version: \"0.1\" is not a semantic version",
            ),
            (
                |c| c["spec"]["minKubeVersion"] = json!("1.27"),
                "spec.minKubeVersion: \"1.27\" is not a full semantic version",
            ),
            (
                |c| c["metadata"]["annotations"]["olm.skiprange"] = json!(">=0.0.1 <0.1.0"),
                "olm.skiprange: wrong case",
            ),
            (
                |c| c["metadata"]["annotations"]["olm.skipRange"] = json!(">=0.0.1 <0.1.0"),
                "set without spec.replaces",
            ),
            (
                |c| c["spec"]["installModes"][0]["type"] = json!("OwnNamespaces"),
                "spec.installModes[0].type: \"OwnNamespaces\" is not an install mode",
            ),
            (
                |c| c["spec"]["installModes"][1]["type"] = json!("OwnNamespace"),
                "spec.installModes[1].type: OwnNamespace is listed twice",
            ),
            (
                |c| c["spec"]["installModes"][0]["supported"] = json!(false),
                "no mode is supported",
            ),
            (
                |c| c["metadata"]["annotations"]["alm-examples"] = json!("[{"),
                "alm-examples: not a JSON array",
            ),
            (
                |c| {
                    c["metadata"]["annotations"]["alm-examples"] = json!(
                        "[{\"apiVersion\":\"kataconfiguration.openshift.io/v2\",\"kind\":\"KataConfig\"}]"
                    )
                },
                "is not an owned CRD of this CSV",
            ),
            (
                |c| {
                    c["spec"]["install"]["spec"]["deployments"][0]["spec"]["selector"]["matchLabels"]
                        ["extra"] = json!("x")
                },
                "selector.matchLabels.extra: not carried by the pod template labels",
            ),
            (
                |c| {
                    c["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"]
                        [0]["resources"] = json!({})
                },
                "resources.requests.cpu: missing",
            ),
            (
                |c| c["spec"]["install"]["spec"]["deployments"][0]["name"] = json!("op.v1"),
                "must be a DNS-1123 label of at most 55 characters without dots",
            ),
            (
                |c| c["spec"]["relatedImages"] = json!([]),
                "spec.relatedImages: empty",
            ),
            (
                |c| {
                    c["metadata"]["annotations"]["features.operators.openshift.io/disconnected"] =
                        json!("true")
                },
                "is not pinned by digest",
            ),
            (
                |c| {
                    c["metadata"]["annotations"]["features.operators.openshift.io/fips-compliant"] =
                        json!("True")
                },
                "fips-compliant: Some(\"True\"); must be \"true\" or \"false\"",
            ),
            (
                |c| {
                    c["metadata"]["annotations"]
                        .as_object_mut()
                        .expect("map")
                        .remove("features.operators.openshift.io/tls-profiles");
                },
                "tls-profiles: None",
            ),
            (
                |c| {
                    c["metadata"]["annotations"]["operators.openshift.io/infrastructure-features"] =
                        json!("[\"disconnected\"]")
                },
                "infrastructure-features: deprecated",
            ),
            (
                |c| {
                    c["metadata"]["annotations"]["operators.openshift.io/valid-subscription"] =
                        json!("OpenShift")
                },
                "valid-subscription: must be a JSON array",
            ),
            (
                |c| c["metadata"]["annotations"]["capabilities"] = json!("Fully Automatic"),
                "capabilities: Some(\"Fully Automatic\")",
            ),
            (
                |c| c["metadata"]["annotations"]["categories"] = json!("Security, Virtualisation"),
                "categories: \"Virtualisation\" is not an OperatorHub category",
            ),
            (
                |c| c["metadata"]["annotations"]["createdAt"] = json!("yesterday"),
                "createdAt: Some(\"yesterday\") is not an RFC 3339 time",
            ),
            (
                |c| c["spec"]["maintainers"][0]["email"] = json!("nobody"),
                "spec.maintainers[0]: needs a name and a valid email",
            ),
            (
                |c| c["spec"]["links"][0]["url"] = json!("github"),
                "spec.links[0]: needs a name and an http(s) url",
            ),
            (
                |c| c["spec"]["icon"][0]["mediatype"] = json!("image/bmp"),
                "spec.icon[0].mediatype: \"image/bmp\"",
            ),
            (
                |c| c["spec"]["icon"][0]["base64data"] = json!("@@@"),
                "spec.icon[0].base64data: not valid base64",
            ),
            (
                |c| c["spec"]["provider"]["name"] = json!(""),
                "spec.provider.name: missing",
            ),
            (
                |c| c["spec"]["displayName"] = json!("K"),
                "spec.displayName: \"K\" must be 3 to 50 characters",
            ),
            (
                |c| c["spec"]["nativeAPIs"] = json!([{"group": "machineconfiguration.openshift.io", "version": "v1", "kind": "MachineConfig"}]),
                "spec.nativeAPIs: MachineConfig (machineconfiguration.openshift.io) must not be required",
            ),
            (
                |c| {
                    c["spec"]["install"]["spec"]["clusterPermissions"][0]["rules"][0]["verbs"] =
                        json!(["*"])
                },
                "wildcard grant",
            ),
            (
                |c| c["spec"]["install"]["spec"]["clusterPermissions"][0]["rules"][0] = json!({"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["create"]}),
                "must not create or change CRDs",
            ),
            (
                |c| {
                    c["spec"]["install"]["spec"]["clusterPermissions"][0]["rules"][0] =
                        json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
                },
                "Secrets granted cluster-wide",
            ),
            (
                |c| {
                    c["spec"]["customresourcedefinitions"]["owned"][0]["statusDescriptors"][0]["path"] =
                        json!("kataNodes.readyCount")
                },
                "status.kataNodes.readyCount does not exist in the CRD schema",
            ),
            (
                |c| c["spec"]["customresourcedefinitions"]["owned"][0]["version"] = json!("v2"),
                "version: v2 is not a served version",
            ),
            (
                |c| {
                    c["spec"]["customresourcedefinitions"]["owned"][0]["specDescriptors"] =
                        json!([])
                },
                "alm-examples[0].spec.checkNodeEligibility: no specDescriptor",
            ),
            (
                |c| {
                    c["spec"]["install"]["spec"]["permissions"][0]["serviceAccountName"] =
                        json!("default")
                },
                "permissions[0].serviceAccountName: \"default\" is not the serviceAccountName of any deployment",
            ),
            (
                |c| c["metadata"]["name"] = json!("other-operator.v0.1.0"),
                "does not start with the package name sandboxed-containers-operator",
            ),
        ];
        for (plant, needle) in cases {
            assert_finding(&with_csv(plant), needle);
        }
    }

    fn webhook(rules: Value) -> Value {
        json!({
            "type": "ValidatingAdmissionWebhook",
            "generateName": "vkataconfig.kb.io",
            "deploymentName": "sandboxed-containers-operator",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "rules": rules,
        })
    }

    #[test]
    fn a_valid_webhook_definition_passes() {
        let findings = with_csv(|c| {
            c["spec"]["webhookdefinitions"] = json!([webhook(json!([{
                "apiGroups": ["kataconfiguration.openshift.io"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["kataconfigs"],
            }]))]);
        });
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn webhook_rules_olm_forbids_are_reported() {
        let cases = [
            (
                json!({"apiGroups": ["operators.coreos.com"], "resources": ["subscriptions"]}),
                "intercepting operators.coreos.com is forbidden by OLM",
            ),
            (
                json!({"apiGroups": ["olm.operatorframework.io"], "resources": ["clusterextensions"]}),
                "intercepting olm.operatorframework.io is forbidden",
            ),
            (
                json!({"apiGroups": ["*"], "resources": ["pods"]}),
                "apiGroups: \"*\" is forbidden by OLM",
            ),
            (
                json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"]}),
                "intercepting admissionregistration.k8s.io validatingwebhookconfigurations is forbidden",
            ),
            (
                json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["MutatingWebhookConfiguration"]}),
                "intercepting admissionregistration.k8s.io mutatingwebhookconfiguration is forbidden",
            ),
            (
                json!({"apiGroups": [""], "resources": ["*"]}),
                "intercepts every resource",
            ),
        ];
        for (rule, needle) in cases {
            assert_finding(
                &with_csv(|c| c["spec"]["webhookdefinitions"] = json!([webhook(json!([rule]))])),
                needle,
            );
        }
    }

    #[test]
    fn webhook_definition_fields_are_checked() {
        type Plant = fn(&mut Value);
        let cases: &[(Plant, &str)] = &[
            (
                |w| w["generateName"] = json!("vkata"),
                "generateName: \"vkata\" must be a fully qualified",
            ),
            (
                |w| w["deploymentName"] = json!("missing"),
                "deploymentName: \"missing\" is not a deployment",
            ),
            (
                |w| w["sideEffects"] = json!("Some"),
                "sideEffects: \"Some\"",
            ),
            (
                |w| w["admissionReviewVersions"] = json!(["v1beta1"]),
                "admissionReviewVersions: [\"v1beta1\"]; use [v1]",
            ),
            (
                |w| w["timeoutSeconds"] = json!(60),
                "timeoutSeconds: 60 is outside 1..30",
            ),
            (
                |w| w["type"] = json!("ConversionWebhook"),
                "with a conversion webhook must support only AllNamespaces",
            ),
        ];
        for (plant, needle) in cases {
            let findings = with_csv(|c| {
                let mut w = webhook(json!([]));
                plant(&mut w);
                c["spec"]["webhookdefinitions"] = json!([w.clone(), w]);
            });
            assert_finding(&findings, needle);
            assert_finding(&findings, "is used by 2 webhook definitions");
        }
    }

    #[test]
    fn planted_layout_faults_are_reported() {
        let dockerfile = bundle_dockerfile();
        let mut files = generated();
        files.push((
            PathBuf::from("manifests/sub/x.yaml"),
            "kind: ConfigMap\nmetadata: {name: x}\n".into(),
        ));
        files.push((PathBuf::from("manifests/.hidden"), String::new()));
        files.push((
            PathBuf::from("manifests/op_apps_v1_deployment.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: op}\n".into(),
        ));
        files.push((
            PathBuf::from("manifests/sa_v1_serviceaccount.yaml"),
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sandboxed-containers-operator}\n".into(),
        ));
        files.push((
            PathBuf::from("manifests/extra.crd.yaml"),
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n".into(),
        ));
        let f = check_bundle(&files, &dockerfile);
        assert_finding(&f, "manifests/sub/x.yaml: manifests/ must be flat");
        assert_finding(&f, "manifests/.hidden: hidden files are not allowed");
        assert_finding(
            &f,
            "kind \"Deployment\" is not allowed in a registry+v1 bundle",
        );
        assert_finding(&f, "ServiceAccount sandboxed-containers-operator clashes");
        assert_finding(&f, "CRD widgets.example.com is not owned by the CSV");

        let no_crd: Vec<_> = generated()
            .into_iter()
            .filter(|(p, _)| !p.ends_with(packaging::CRD_FILE))
            .collect();
        assert_finding(
            &check_bundle(&no_crd, &dockerfile),
            "no CustomResourceDefinition kataconfigs.kataconfiguration.openshift.io in manifests/",
        );
        let no_csv: Vec<_> = generated()
            .into_iter()
            .filter(|(p, _)| *p != csv_path())
            .collect();
        assert_finding(
            &check_bundle(&no_csv, &dockerfile),
            "0 ClusterServiceVersions",
        );
        let huge = vec![(
            PathBuf::from("manifests/big.yaml"),
            format!(
                "kind: ConfigMap\nmetadata: {{name: big}}\ndata: {{x: '{}'}}\n",
                "a".repeat(1 << 20)
            ),
        )];
        assert_finding(
            &check_bundle(&huge, &dockerfile),
            "exceeds OLM's 1 MiB bundle limit",
        );
    }

    #[test]
    fn non_structural_crd_schemas_are_reported() {
        let mut p = Vec::new();
        check_structural(
            &json!({"type": "object", "properties": {
                "a": {"description": "no type"},
                "b": {"type": "array"},
                "c": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": {"type": "string"}},
                "d": {"x-kubernetes-int-or-string": true},
                "e": {"type": "array", "items": {"type": "object", "properties": {"f": {}}}},
            }}),
            "s",
            &mut p,
        );
        assert_eq!(
            p,
            [
                "s.properties.a: no type; a structural schema needs one on every node",
                "s.properties.b: type array without items",
                "s.properties.c: properties and additionalProperties are mutually exclusive",
                "s.properties.e.items.properties.f: no type; a structural schema needs one on every node",
            ]
        );
        let files: Vec<_> = generated()
            .into_iter()
            .map(|(path, content)| {
                if path.ends_with(packaging::CRD_FILE) {
                    let mut crd: Value = serde_yaml::from_str(&content).expect("crd");
                    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                        .as_object_mut()
                        .expect("spec")
                        .remove("type");
                    (path, serde_yaml::to_string(&crd).expect("yaml"))
                } else {
                    (path, content)
                }
            })
            .collect();
        assert_finding(
            &check_bundle(&files, &bundle_dockerfile()),
            "openAPIV3Schema.properties.spec: no type",
        );
    }

    #[test]
    fn annotations_and_dockerfile_must_agree() {
        let files = generated();
        let drifted = bundle_dockerfile().replace("channels.v1=stable", "channels.v1=fast");
        assert_finding(
            &check_bundle(&files, &drifted),
            "LABEL operators.operatorframework.io.bundle.channels.v1=fast differs from annotations.yaml (stable)",
        );
        let extra = format!("{}LABEL foo=bar\n", bundle_dockerfile());
        assert_finding(
            &check_bundle(&files, &extra),
            "LABEL foo is not in annotations.yaml",
        );

        let edit = |from: &str, to: &str| -> Vec<String> {
            let files: Vec<_> = generated()
                .into_iter()
                .map(|(p, c)| {
                    if p.ends_with("annotations.yaml") {
                        (p, c.replace(from, to))
                    } else {
                        (p, c)
                    }
                })
                .collect();
            check_bundle(&files, &bundle_dockerfile())
        };
        assert_finding(
            &edit("channel.default.v1: stable", "channel.default.v1: fast"),
            "default channel \"fast\" is not one of the channels",
        );
        assert_finding(
            &edit("manifests.v1: manifests/", "manifests.v1: manifest/"),
            "manifests.v1 is \"manifest/\"; must be manifests/",
        );
        assert_finding(
            &edit("  com.redhat.openshift.versions: v4.14\n", ""),
            "com.redhat.openshift.versions missing",
        );
        assert_finding(
            &edit("annotations:", "notes:"),
            "needs an `annotations` map",
        );
        let none: Vec<_> = generated()
            .into_iter()
            .filter(|(p, _)| !p.ends_with("annotations.yaml"))
            .collect();
        assert_finding(
            &check_bundle(&none, &bundle_dockerfile()),
            "metadata/annotations.yaml: missing",
        );
    }

    #[test]
    fn reads_a_bundle_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        packaging::write_bundle(dir.path()).expect("write");
        let files = read_bundle_dir(dir.path()).expect("read");
        let mut expected = generated();
        expected.sort();
        assert_eq!(files, expected);
        let err = read_bundle_dir(&dir.path().join("missing")).expect_err("missing dir");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
