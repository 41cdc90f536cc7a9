#!/usr/bin/env bash
# Memory and CPU of the operator alone at scale (benches/operator_alone.rs): the operator's
# release binary runs as its own process against the in-memory API server in another process
# (testkit's fake-apiserver) and, when KUBEBUILDER_ASSETS is set, against a real kube-apiserver;
# its own /proc/<pid>/status and /proc/<pid>/stat are read. Prints a Markdown table.
#
#   hack/bench-scale.sh [--sizes "2004 5004"] [--servers "fake real"] [--no-plain] [-- BENCH ARGS]
#
# Rows: a small-node cluster (5 labels, no annotations) at the first size, then realistic
# nodes at every size; bytes per node is the slope of settled RSS between the two largest sizes.
# OPERATOR=path benchmarks another operator binary (e.g. one built from an older commit);
# FAKE_APISERVER=path uses a fake-apiserver already built (neither is rebuilt then); BENCH=path
# runs an already built harness (target/release/deps/operator_alone-*) instead of `cargo bench`.
# OPERATOR_RUST_LOG sets the operator's log filter (default info; its log's path is printed as
# RESULT operator.log), e.g. to see what starts each reconcile.
# Loopback only; every loop in the bench is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="2004 5004"
SERVERS="fake"
[ -n "${KUBEBUILDER_ASSETS:-}" ] && SERVERS="fake real"
PLAIN=1
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) SIZES="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --no-plain) PLAIN=0; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
# The binaries under test; a path given in the environment is used as it is (not rebuilt).
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${OPERATOR:-}" ]; then
    cargo build --release -p sandboxed-containers-operator --bin sandboxed-containers-operator >&2
    OPERATOR="$TARGET/release/sandboxed-containers-operator"
fi
if [ -z "${FAKE_APISERVER:-}" ]; then
    cargo build --release -p sandboxed-containers-operator-testkit --bin fake-apiserver >&2
    FAKE_APISERVER="$TARGET/release/fake-apiserver"
fi
for bin in "$OPERATOR" "$FAKE_APISERVER"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { # name, args...
    local name=$1; shift
    echo "== $name: $*" >&2
    local harness=(cargo bench --bench operator_alone --)
    [ -n "${BENCH:-}" ] && harness=("$BENCH")
    "${harness[@]}" --operator "$OPERATOR" --fake-apiserver "$FAKE_APISERVER" \
        "$@" "${EXTRA[@]}" | tee "$OUT/$name" >&2
}
first=${SIZES%% *}
for server in $SERVERS; do
    [ "$PLAIN" = 1 ] && run "$server-plain-$first" --server "$server" --nodes "$first" --plain
    for n in $SIZES; do
        run "$server-$n" --server "$server" --nodes "$n"
    done
done

python3 - "$OUT" "$OPERATOR" <<'PY'
import os, sys
out, operator = sys.argv[1], sys.argv[2]
rows = []
for name in sorted(os.listdir(out), key=lambda n: (n.split("-")[0], "plain" not in n, int(n.split("-")[-1]))):
    r = {}
    for line in open(os.path.join(out, name)):
        if line.startswith("RESULT "):
            _, k, v = line.split(maxsplit=2)
            r[k] = v.strip()
    if "peak.hwm_mib" in r:
        rows.append(r)
print(f"\noperator binary: {operator}\n")
print("| server | cluster | peak RSS (VmHWM) | RSS settled / +10 s | CPU per reconcile: KataConfig edit / node label edit | CPU per unread node event (reconciles caused) | startup to ready |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    kind = "small nodes" if r["plain"] == "true" else "realistic nodes"
    print(f"| {r['server']} | {r['nodes']} {kind} | {r['peak.hwm_mib']} MiB | {r['settled.rss_mib']} / {r['settled10s.rss_mib']} MiB "
          f"| {float(r['kc_touch.cpu_ms']):.1f} / {float(r['node_label.cpu_ms']):.1f} ms "
          f"| {r['node_event.cpu_us']} µs ({r['node_event.reconciles']}) | {r['ready.seconds']} s |")
for server in sorted({r["server"] for r in rows}):
    real = sorted((int(r["nodes"]), float(r["settled.rss_mib"]), float(r["peak.hwm_mib"]))
                  for r in rows if r["server"] == server and r["plain"] != "true")
    if len(real) >= 2:
        (n0, s0, p0), (n1, s1, p1) = real[-2], real[-1]
        per = lambda a, b: (b - a) * 1024 * 1024 / (n1 - n0)
        print(f"\n{server}: bytes per realistic node (slope {n0} -> {n1}): settled RSS {per(s0, s1):.0f} B, peak {per(p0, p1):.0f} B")
PY
