//! Command-line interface of `sandboxed-containers-operator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::names::DEFAULT_OPERATOR_NAMESPACE;

#[derive(Debug, Parser)]
#[command(
    name = "sandboxed-containers-operator",
    version,
    about = "Installs and governs Kata Containers (sandboxed containers) on OpenShift and Kubernetes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing `Run` would only change every caller's pattern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: reconciler, admission webhooks, metrics and health endpoints.
    Run(RunArgs),
    /// Print the KataConfig CustomResourceDefinition as YAML.
    Crd,
    /// Print, offline, every object the reconciler would create or change for a KataConfig.
    Render(RenderArgs),
    /// Write the OLM bundle (bundle/, bundle.Dockerfile) and the plain manifests (deploy/).
    Bundle {
        /// Directory to write bundle/, bundle.Dockerfile and deploy/ into.
        #[arg(long, default_value = ".")]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// KataConfig manifest (YAML).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Nodes as `kubectl get nodes -o yaml` prints them (a List, NodeList or Node documents).
    /// Without it, a built-in example cluster of 3 workers and 3 control-plane nodes is used.
    #[arg(long)]
    pub nodes: Option<PathBuf>,
    /// How kata gets onto the nodes: through the Machine Config Operator (OpenShift) or the
    /// node-installer DaemonSet (clusters without the MCO). A running operator picks this from
    /// the APIs the cluster serves; offline it must be told.
    #[arg(long, value_enum, default_value_t = RenderBackend::MachineConfig)]
    pub backend: RenderBackend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderBackend {
    MachineConfig,
    NodeInstaller,
}

impl From<RenderBackend> for crate::api::Backend {
    fn from(b: RenderBackend) -> Self {
        match b {
            RenderBackend::MachineConfig => crate::api::Backend::MachineConfig,
            RenderBackend::NodeInstaller => crate::api::Backend::NodeInstaller,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Namespace the operator runs in (its Secret, Lease and Services live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    pub namespace: String,
    /// Do not run the KataConfig reconciler.
    #[arg(long)]
    pub disable_controller: bool,
    /// Do not serve or register the admission webhooks.
    #[arg(long)]
    pub disable_webhooks: bool,
    /// Do not serve metrics.
    #[arg(long)]
    pub disable_metrics: bool,
    /// Do not take part in leader election (run the reconciler unconditionally).
    #[arg(long)]
    pub no_leader_elect: bool,
    /// Webhook HTTPS listen address.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_bind: SocketAddr,
    /// Metrics listen address (HTTPS with TokenReview/SubjectAccessReview unless --metrics-insecure).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub metrics_bind: SocketAddr,
    /// Health listen address (plain HTTP: /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_bind: SocketAddr,
    /// Serve /metrics over plain HTTP without authentication (local use only).
    #[arg(long)]
    pub metrics_insecure: bool,
    /// Read the serving certificate from DIR/tls.crt and DIR/tls.key (cert-manager, service-ca,
    /// OLM) instead of managing a CA and certificate in a Secret. Reloaded when the files change.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Register webhooks with clientConfig.url (e.g. https://127.0.0.1:9443) instead of the
    /// in-cluster Service; the managed certificate then covers that host.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// Name of the Service in front of the webhook server.
    #[arg(long, default_value = "sandboxed-containers-operator-webhook")]
    pub webhook_service: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Leader-election identity (the pod name; defaults to `sandboxed-containers-operator-<pid>`).
    #[arg(long, env = "POD_NAME", hide = true)]
    pub identity: Option<String>,
    /// Leader-election Lease duration; the leader renews every third of it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600), hide = true)]
    pub lease_duration_seconds: u64,
    /// How often to re-check which optional APIs the server serves (ValidatingAdmissionPolicy,
    /// the Machine Config Operator, prometheus-operator's monitoring API).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub discovery_interval_seconds: u64,
    /// The operator's own Deployment (in --namespace): owner of the monitoring objects the
    /// operator keeps while monitoring.coreos.com/v1 is served (ServiceMonitor, PrometheusRule,
    /// the Prometheus Role and RoleBinding), so they go when it goes. Unset: it keeps none.
    #[arg(long, env = "OPERATOR_DEPLOYMENT_NAME", value_name = "NAME")]
    pub owner_deployment: Option<String>,
    /// The OperatorCondition OLM created for this operator (OLM sets OPERATOR_CONDITION_NAME):
    /// the leader sets its `Upgradeable` condition. Unset: no OperatorCondition is written.
    #[arg(long, env = "OPERATOR_CONDITION_NAME", value_name = "NAME")]
    pub operator_condition: Option<String>,
}
