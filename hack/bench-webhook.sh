#!/usr/bin/env bash
# Benchmarks /validate-pod and /mutate-pod of the real webhook server against a minimal
# hyper+rustls server returning a canned response, in the same run, on 127.0.0.1 only.
# Load generator: oha (crates.io), installed if absent. Prints a Markdown table.
#
#   hack/bench-webhook.sh              # 64 keep-alive connections, 10 s per run, 3 rounds, HTTP/1.1
#   DURATION=5s ROUNDS=1 CONNECTIONS=32 HTTP2=1 hack/bench-webhook.sh
#
# Each round runs baseline, /validate-pod and /mutate-pod back to back (so background load hits
# all three alike); the table shows the median over rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
OURS=127.0.0.1:19443
BASE=127.0.0.1:19444
SCAN=127.0.0.1:19445
PARSE=127.0.0.1:19446
OUT=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --example webhook_sample_server --example canned_server --example bench_floor >&2

target/release/examples/webhook_sample_server "$OURS" "$OUT/ca.crt" 2>"$OUT/ours.log" &
PIDS+=($!)
target/release/examples/canned_server "$BASE" 2>"$OUT/base.log" &
PIDS+=($!)
target/release/examples/bench_floor scan "$SCAN" 2>"$OUT/scan.log" &
PIDS+=($!)
target/release/examples/bench_floor parse "$PARSE" 2>"$OUT/parse.log" &
PIDS+=($!)
for addr in "$OURS" "$BASE" "$SCAN" "$PARSE"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
    sleep 0.1
  done
done

extra=()
[ "${HTTP2:-0}" = 1 ] && extra+=(--http2)

run() { # name addr path sample
  oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --insecure "${extra[@]}" -m POST \
    -H 'content-type: application/json' -D "webhooks/samples/$4.json" \
    --output-format json "https://$2$3" >"$OUT/$1.json"
}

for r in $(seq "$ROUNDS"); do
  run "baseline.$r" "$BASE" /validate-pod pod-kata-require
  run "scan.$r" "$SCAN" /validate-pod pod-kata-require
  run "parse.$r" "$PARSE" /validate-pod pod-kata-require
  run "validate.$r" "$OURS" /validate-pod pod-kata-require
  run "mutate.$r" "$OURS" /mutate-pod pod-plain-require
done

python3 - "$OUT" "$CONNECTIONS" "$DURATION" "${HTTP2:-0}" "$ROUNDS" <<'PY'
import json, sys, os, statistics
out, conns, dur, h2, rounds = sys.argv[1:6]
def load1(n):
    d = json.load(open(os.path.join(out, n + ".json")))
    s = d["summary"]; p = d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    bad = sum(v for k, v in codes.items() if k != "200")
    # oha counts connections cut at the end of the run as errors ("aborted due to deadline").
    errors = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, bad, errors
def load(n):
    runs = [load1(f"{n}.{r}") for r in range(1, int(rounds) + 1)]
    med = lambda i: statistics.median(x[i] for x in runs)
    return med(0), med(1), med(2), sum(x[3] for x in runs), sum(x[4] for x in runs), [x[0] for x in runs]
base = load("baseline")
print(f"{conns} concurrent keep-alive connections, {dur} per run, median of {rounds} interleaved rounds, {'h2' if h2 == '1' else 'HTTP/1.1'} over TLS, 127.0.0.1\n")
print("| server | endpoint (sample) | req/s | p50 ms | p99 ms | % of baseline req/s | non-200 / errors |")
print("|---|---|---:|---:|---:|---:|---|")
for name, label in [("baseline", "canned hyper+rustls (pod-kata-require)"),
                    ("scan", "our stack + JSON scan only, canned answer"),
                    ("parse", "our stack + review parse only, canned answer"),
                    ("validate", "/validate-pod (pod-kata-require)"),
                    ("mutate", "/mutate-pod (pod-plain-require)")]:
    rps, p50, p99, bad, errors, each = load(name)
    who = {"baseline": "baseline", "scan": "reference", "parse": "reference"}.get(name, "webhook")
    print(f"| {who} | {label} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {100*rps/base[0]:.0f}% | {bad} / {errors} |")
print("\nreq/s per round:", {n: [round(x) for x in load(n)[5]] for n in ["baseline", "scan", "parse", "validate", "mutate"]})
PY
