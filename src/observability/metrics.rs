//! The one Prometheus registry of the process and every metric of the contract.
//!
//! Labels stay low-cardinality: no object names, only fixed sets (result, state, webhook,
//! operation, error category).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Node states reported by `kata_operator_nodes{state}` (the `status.kataNodes` lists).
pub const NODE_STATES: [&str; 7] = [
    "installed",
    "installing",
    "waiting_to_install",
    "failed_to_install",
    "uninstalling",
    "waiting_to_uninstall",
    "failed_to_uninstall",
];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// 1 when the KataConfig installation completed on every selected node, else 0 (upstream name).
    pub installation_success: Gauge,
    /// Reconciliations by result: `success`, `error`, `invalid_spec`.
    pub reconciliations: IntCounterVec,
    pub reconcile_duration: Histogram,
    /// Nodes per `status.kataNodes` list.
    pub nodes: IntGaugeVec,
    /// Admission requests by webhook, operation and result (`allowed`, `denied`, `mutated`, `error`).
    pub admission_requests: IntCounterVec,
    pub admission_duration: HistogramVec,
    pub build_info: IntGaugeVec,
    /// Kubernetes API errors by category (`not_found`, `conflict`, `throttled`, `server`, `client`, `transport`, `timeout`, `watch`).
    pub api_errors: IntCounterVec,
    /// Unix time at which the serving certificate expires.
    pub certificate_expiry: Gauge,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Metrics {
            installation_success: Gauge::with_opts(Opts::new(
                "kata_config_installation_success",
                "1 when kata is installed on every selected node, 0 otherwise",
            ))
            .expect("static metric definition"),
            reconciliations: IntCounterVec::new(
                Opts::new(
                    "kata_operator_reconciliations_total",
                    "KataConfig reconciliations by result",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            reconcile_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "kata_operator_reconcile_duration_seconds",
                    "Time spent in one KataConfig reconciliation",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )
            .expect("static metric definition"),
            nodes: IntGaugeVec::new(
                Opts::new("kata_operator_nodes", "Kata nodes by installation state"),
                &["state"],
            )
            .expect("static metric definition"),
            admission_requests: IntCounterVec::new(
                Opts::new(
                    "kata_operator_admission_requests_total",
                    "Admission requests by webhook, operation and result",
                ),
                &["webhook", "operation", "result"],
            )
            .expect("static metric definition"),
            admission_duration: HistogramVec::new(
                HistogramOpts::new(
                    "kata_operator_admission_duration_seconds",
                    "Time to decide one admission request",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
                ]),
                &["webhook"],
            )
            .expect("static metric definition"),
            build_info: IntGaugeVec::new(
                Opts::new("kata_operator_build_info", "Operator build information"),
                &["version"],
            )
            .expect("static metric definition"),
            api_errors: IntCounterVec::new(
                Opts::new(
                    "kata_operator_api_errors_total",
                    "Kubernetes API errors by category",
                ),
                &["category"],
            )
            .expect("static metric definition"),
            certificate_expiry: Gauge::with_opts(Opts::new(
                "kata_operator_certificate_expiry_timestamp_seconds",
                "Unix time at which the webhook serving certificate expires",
            ))
            .expect("static metric definition"),
            leader: IntGauge::with_opts(Opts::new(
                "kata_operator_leader",
                "1 while this replica holds the leader Lease",
            ))
            .expect("static metric definition"),
            registry,
        };
        m.register_all();
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for state in NODE_STATES {
            m.nodes.with_label_values(&[state]).set(0);
        }
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.installation_success.clone()),
            Box::new(self.reconciliations.clone()),
            Box::new(self.reconcile_duration.clone()),
            Box::new(self.nodes.clone()),
            Box::new(self.admission_requests.clone()),
            Box::new(self.admission_duration.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.api_errors.clone()),
            Box::new(self.certificate_expiry.clone()),
            Box::new(self.leader.clone()),
        ];
        for c in collectors {
            // Names are static and distinct; a failure here is a programming error caught by tests.
            let _ = self.registry.register(c);
        }
    }

    /// Publishes the node lists of a KataConfig status.
    pub fn set_nodes(&self, nodes: &crate::api::KataNodesStatus) {
        let counts = [
            nodes.installed.len(),
            nodes.installing.len(),
            nodes.waiting_to_install.len(),
            nodes.failed_to_install.len(),
            nodes.uninstalling.len(),
            nodes.waiting_to_uninstall.len(),
            nodes.failed_to_uninstall.len(),
        ];
        for (state, count) in NODE_STATES.iter().zip(counts) {
            self.nodes
                .with_label_values(&[state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_registered() {
        let m = Metrics::new();
        m.reconciliations.with_label_values(&["success"]).inc();
        m.admission_requests
            .with_label_values(&["mutate-pod", "CREATE", "mutated"])
            .inc();
        m.admission_duration
            .with_label_values(&["mutate-pod"])
            .observe(0.001);
        m.reconcile_duration.observe(0.01);
        let text = m.encode();
        for name in [
            "kata_config_installation_success 0",
            "kata_operator_reconciliations_total{result=\"success\"} 1",
            "kata_operator_reconcile_duration_seconds_count 1",
            "kata_operator_nodes{state=\"installed\"} 0",
            "kata_operator_admission_requests_total{operation=\"CREATE\",result=\"mutated\",webhook=\"mutate-pod\"} 1",
            "kata_operator_admission_duration_seconds_count{webhook=\"mutate-pod\"} 1",
            "kata_operator_build_info{version=\"",
            "kata_operator_leader 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn node_gauges_follow_status_lists() {
        let m = Metrics::new();
        let status = crate::api::KataNodesStatus {
            installed: vec!["a".into(), "b".into(), "c".into()],
            failed_to_install: vec!["d".into()],
            ..Default::default()
        };
        m.set_nodes(&status);
        let text = m.encode();
        assert!(text.contains("kata_operator_nodes{state=\"installed\"} 3"));
        assert!(text.contains("kata_operator_nodes{state=\"failed_to_install\"} 1"));
        assert!(text.contains("kata_operator_nodes{state=\"installing\"} 0"));
    }
}
