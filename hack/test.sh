#!/usr/bin/env bash
# The whole test suite: formatting, lints, generated-artifact drift, and every test tier.
# Usage: hack/test.sh            (from the repository root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# kubernetes-validate (PyPI) checks our core objects against the Kubernetes OpenAPI schemas;
# installed once into a virtualenv under target/. Without Python the packaging test skips it.
KV_VENV=target/kubernetes-validate-venv
if [ ! -x "$KV_VENV/bin/kubernetes-validate" ]; then
  if command -v python3 >/dev/null 2>&1 && python3 -m venv --help >/dev/null 2>&1; then
    echo "==> installing kubernetes-validate into $KV_VENV"
    python3 -m venv "$KV_VENV"
    "$KV_VENV/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.37,<1.38' \
      || echo "warning: kubernetes-validate could not be installed; its checks will be skipped"
  else
    echo "warning: python3 with venv not found; kubernetes-validate checks will be skipped"
  fi
fi
if [ -x "$KV_VENV/bin/kubernetes-validate" ]; then
  KUBERNETES_VALIDATE="$(pwd)/$KV_VENV/bin/kubernetes-validate"
  export KUBERNETES_VALIDATE
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> no import cycles in src/"
python3 hack/check-import-cycles.py src file
python3 hack/check-import-cycles.py src top

# The whole workspace: the operator crate and testkit (its test-only support crate).
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Tests that need a real kube-apiserver carry `real_api_server` in their name. Without the
# binaries they are filtered out, so the summary counts them as skipped, never as passed.
filter=()
if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "==> envtest tier: KUBEBUILDER_ASSETS is not set, so the real-API-server tests are skipped (the in-memory tiers still run)"
  filter=(-E 'not test(real_api_server)')
fi

echo "==> cargo nextest run --workspace"
cargo nextest run --workspace --no-fail-fast "${filter[@]}"
