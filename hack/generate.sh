#!/usr/bin/env bash
# Regenerates every committed artifact from the code (tests fail when they drift):
# the CRD, the OLM bundle (bundle/, bundle.Dockerfile) and the plain manifests (deploy/).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -- crd > bundle/manifests/kataconfiguration.openshift.io_kataconfigs.yaml
echo "regenerated bundle/manifests/kataconfiguration.openshift.io_kataconfigs.yaml"
cargo run --quiet -- bundle --output .
