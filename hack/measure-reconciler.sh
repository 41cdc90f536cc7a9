#!/usr/bin/env bash
# Prints the reconciler's numbers against the in-memory API server and MCO simulator:
# API requests per full install on a 3-worker cluster, writes during a settled window
# (default 60 s, the issue's figure) and the time from the pool reporting Updated to the
# KataConfig reporting Ready.
#   hack/measure-reconciler.sh [SETTLE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
MEASURE_SETTLE_SECS="${1:-60}" cargo test --test reconciler \
  measure_install_requests_settled_writes_and_completion_latency -- --nocapture 2>&1 |
  grep -E '^MEASURE|test result'
