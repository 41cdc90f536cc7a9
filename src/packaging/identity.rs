//! Who the operator is to OLM and to the cluster: package, channel, object names, images, the
//! supported platform versions and the release in the upgrade graph. Every generated manifest
//! reads them from here.

/// OLM package name; the CSV is `<PACKAGE>.v<version>`.
pub const PACKAGE: &str = "sandboxed-containers-operator";
pub const CHANNEL: &str = "stable";
/// Name of the Deployment, its ServiceAccount and the operator's ClusterRole/Role.
pub const OPERATOR_NAME: &str = "sandboxed-containers-operator";
pub const WEBHOOK_SERVICE: &str = "sandboxed-containers-operator-webhook";
pub const METRICS_SERVICE: &str = "sandboxed-containers-operator-metrics";
pub const METRICS_READER_ROLE: &str = "sandboxed-containers-operator-metrics-reader";
pub const IMAGE: &str = concat!(
    "quay.io/openshift_sandboxed_containers/sandboxed-containers-operator-rs:v",
    env!("CARGO_PKG_VERSION")
);
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");
/// OpenShift 4.14 runs Kubernetes 1.27; every API the operator calls is GA there.
pub const MIN_KUBE_VERSION: &str = "1.27.0";
pub const OPENSHIFT_VERSIONS: &str = "v4.14";
/// Scorecard test image (operator-sdk release the scorecard config was written for).
pub const SCORECARD_IMAGE: &str = "quay.io/operator-framework/scorecard-test:v1.39.0";

/// One published version and its place in the upgrade graph.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub version: &'static str,
    /// The bundle this one replaces (its version); `None` for the first release.
    pub previous: Option<&'static str>,
    /// Lowest version that may upgrade straight to this one (defaults to `previous`).
    pub skip_floor: Option<&'static str>,
    /// CSV `createdAt`: fixed per release (not the build time) so regeneration is reproducible.
    pub created_at: &'static str,
}

impl Release {
    /// Edit here when cutting a release: bump `created_at`, set `previous` to the last version.
    pub const CURRENT: Release = Release {
        version: env!("CARGO_PKG_VERSION"),
        previous: None,
        skip_floor: None,
        created_at: "2026-11-23T00:00:00Z",
    };

    pub fn replaces(&self) -> Option<String> {
        self.previous.map(|p| format!("{PACKAGE}.v{p}"))
    }

    /// `olm.skipRange`, always paired with `replaces` (a skipRange alone prunes the graph).
    pub fn skip_range(&self) -> Option<String> {
        self.previous
            .map(|p| format!(">={} <{}", self.skip_floor.unwrap_or(p), self.version))
    }
}
