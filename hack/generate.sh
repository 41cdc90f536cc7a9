#!/usr/bin/env bash
# Regenerates every committed artifact from the code (tests fail when they drift).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -- crd > bundle/manifests/kataconfiguration.openshift.io_kataconfigs.yaml
echo "regenerated bundle/manifests/kataconfiguration.openshift.io_kataconfigs.yaml"
