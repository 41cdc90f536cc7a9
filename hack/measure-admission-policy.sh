#!/usr/bin/env bash
# Pod-creation latency the ValidatingAdmissionPolicy adds, next to the webhooks', against a real
# kube-apiserver (KUBEBUILDER_ASSETS): the operator installs kata and registers everything, then
# PODS plain pods (default 300, dryRun=All) are created per configuration: operator running
# (webhook + policy), operator stopped (policy; webhooks fail open), no binding, no pod webhooks
# and no binding (baseline), policy alone. Prints median and p90 per configuration.
# Usage: KUBEBUILDER_ASSETS=/path/to/assets [PODS=300] hack/measure-admission-policy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBEBUILDER_ASSETS:?set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd}"
export KUBEBUILDER_ASSETS PODS="${PODS:-300}"
cargo test --test envtest_admission_policy measure_pod_creation_latency_real_api_server \
  -- --ignored --nocapture
