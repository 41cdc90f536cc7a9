#!/usr/bin/env bash
# Runs the whole operator in-process against the in-memory API server on a large cluster
# (default 5,000 workers + 3 masters, 1,000 namespaces) and prints a Markdown table:
# CPU per reconcile, peak RSS (with the fake API server's own share as a baseline) and
# admission latency on a 3-worker cluster next to the big one.
#   hack/bench-scale.sh [--nodes N] [--namespaces M] [--reconciles K] [--requests R]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
cargo bench --bench operator_scale -- "$@" | tee "$OUT" >&2

python3 - "$OUT" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        _, k, v = line.split(maxsplit=2)
        r[k] = v.strip()
f = lambda k: float(r[k])
print(f"\n{r['nodes']} workers + 3 masters, {r['namespaces']} namespaces; "
      f"{r['reconciles']} reconciles per trigger kind; {r['requests']} sequential requests per endpoint\n")
print("| measure | value | goal |")
print("|---|---:|---|")
print(f"| CPU per reconcile, KataConfig edit (process CPU / reconciles) | {f('kc_touch.cpu_ms'):.1f} ms | < 50 ms |")
print(f"| CPU per reconcile, node label edit | {f('node_touch.cpu_ms'):.1f} ms | < 50 ms |")
print(f"| mean reconcile duration (wall, `kata_operator_reconcile_duration_seconds`) | {f('kc_touch.wall_ms'):.1f} / {f('node_touch.wall_ms'):.1f} ms | |")
print(f"| operator writes during the {int(r['reconciles'])*2} measured reconciles | {int(r['kc_touch.operator_writes']) + int(r['node_touch.operator_writes'])} | |")
print(f"| CPU of one API write nobody watches (fake server + client, for reference) | {f('api_write.cpu_ms'):.2f} ms | |")
print(f"| startup to settled (initial lists, first reconciles): CPU / wall | {r['startup.cpu_ms']} / {r['startup.wall_ms']} ms | |")
base, peak = f('baseline.hwm_mib'), f('peak.hwm_mib')
print(f"| peak RSS, whole process (VmHWM) | {peak:.1f} MiB | |")
print(f"| baseline: fake API + seeded objects, before the operator (VmHWM) | {base:.1f} MiB | |")
print(f"| peak RSS attributable to the operator (difference) | {peak - base:.1f} MiB | < 50 MiB |")
print(f"| RSS settled / at the end (VmRSS) | {r['settled.rss_mib']} / {r['final.rss_mib']} MiB | |")
print()
print("| admission (HTTPS, keep-alive, sequential) | 3 workers, 10 ns: p50 / p99 ms | big: p50 / p99 ms |")
print("|---|---:|---:|")
for k in ["validate", "mutate"]:
    print(f"| /{k}-pod | {f('small.'+k+'.p50_ms'):.3f} / {f('small.'+k+'.p99_ms'):.3f} | {f('big.'+k+'.p50_ms'):.3f} / {f('big.'+k+'.p99_ms'):.3f} |")
PY
