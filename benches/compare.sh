#!/usr/bin/env bash
# Runs every berth-bench workload against CNCF Distribution 2.8.2 (Debian's
# docker-registry) and against berth on this machine, alternating A/B, and
# writes a markdown table with the medians, each server's CPU seconds and
# peak RSS per workload, and the machine's physical limits (SHA-256 on one
# core, synced disk write, disk read, loopback TCP, and pushes to berth-sink,
# which receives and hashes but stores nothing).
#
#   benches/compare.sh            full run (3 repetitions, ~20-25 min on 2 cores),
#                                 writes benches/RESULTS.md
#   benches/compare.sh --quick    1 repetition, small counts (~3 min), writes
#                                 /tmp/berth-compare-quick.md
#
# Options: --reps N, --out FILE, --dir DIR (where the data dirs go; default
# /var/tmp, a real disk), --note TEXT (added to the results), --no-build.
# Needs root or sudo the first time, to apt-get install docker-registry
# and iperf3. All traffic stays on 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
QUICK=0
REPS=""
OUT=""
BASE_DIR="/var/tmp"
NOTE=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --reps) REPS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --dir) BASE_DIR="$2"; shift ;;
        --note) NOTE="$2"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    REPS="${REPS:-1}"
    OUT="${OUT:-/tmp/berth-compare-quick.md}"
else
    REPS="${REPS:-3}"
    OUT="${OUT:-$ROOT/benches/RESULTS.md}"
fi

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: both servers, iperf3, the temp dir; also on Ctrl-C ----------
WORK=""
DIST_PID=""
BERTH_PID=""
IPERF_PID=""
SINK_PID=""
stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$DIST_PID"
    stop_pid "$BERTH_PID"
    stop_pid "$IPERF_PID"; stop_pid "$SINK_PID"
    DIST_PID="" BERTH_PID="" IPERF_PID="" SINK_PID=""
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# --- what the run needs --------------------------------------------------
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
APT_UPDATED=0
need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}
need docker-registry docker-registry
need iperf3 iperf3
need openssl openssl
need curl curl
need skopeo skopeo
need python3 python3
# Debian's package starts its own instance (port 5000); it plays no part here.

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" = 1 ]; then
    # berth as the image ships it (the `dist` profile); the load generator
    # as a plain release build.
    log "building berth (dist) and berth-bench (release)"
    (cd "$ROOT" && nice -n 10 scripts/build-dist.sh -q \
        && nice -n 10 cargo build --release -q -p berth-bench)
fi
BERTH_BIN="$TARGET_DIR/dist/berth"
BENCH_BIN="$TARGET_DIR/release/berth-bench"
SINK_BIN="$TARGET_DIR/release/berth-sink"
for bin in "$BERTH_BIN" "$BENCH_BIN" "$SINK_BIN"; do
    [ -x "$bin" ] || { echo "missing $bin" >&2; exit 1; }
done

mkdir -p "$BASE_DIR"
WORK="$(mktemp -d "$BASE_DIR/berth-compare.XXXXXX")"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
START_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
T0=$(date +%s)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- physical limits -----------------------------------------------------
measure_limits() { # measure_limits FILE
    local out="$1"
    log "physical limits: SHA-256, disk, loopback, pushes to berth-sink"
    local sha dd_all dd_w dd_r dd_c iperf port sink_url sink_push sink_chunked sink_skopeo
    sha=$(openssl speed -evp sha256 -bytes 1048576 -seconds "$LIM_SECS" 2>/dev/null \
        | awk '/^sha256/ {v=$NF; sub(/k$/,"",v); printf "%.0f", v/1000}')
    # Synced sequential write (median of 3: virtual disks vary a lot), then
    # an uncached (O_DIRECT) and a cached read.
    dd_all=$(for _ in $(seq "$DD_RUNS"); do
            rm -f "$WORK/dd.bin"
            LC_ALL=C dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 \
                | awk '/copied/ {printf "%.0f\n", $1/$(NF-3)/1e6}'
        done | sort -n | paste -sd/)
    dd_w=$(echo "$dd_all" | tr / '\n' | sed -n "$(( (DD_RUNS + 1) / 2 ))p")
    dd_r=$(LC_ALL=C dd if="$WORK/dd.bin" of=/dev/null bs=1M iflag=direct 2>&1 \
        | awk '/copied/ {printf "%.0f", $1/$(NF-3)/1e6}')
    LC_ALL=C dd if="$WORK/dd.bin" of=/dev/null bs=1M 2>/dev/null
    dd_c=$(LC_ALL=C dd if="$WORK/dd.bin" of=/dev/null bs=1M 2>&1 \
        | awk '/copied/ {printf "%.0f", $1/$(NF-3)/1e6}')
    rm -f "$WORK/dd.bin"
    port=$(free_port)
    iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    IPERF_PID=$!
    sleep 0.5
    iperf=$(timeout 30 iperf3 -c 127.0.0.1 -p "$port" -t "$((LIM_SECS + 2))" -J 2>/dev/null \
        | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))' \
        || echo 0)
    stop_pid "$IPERF_PID"; IPERF_PID=""
    # What receiving and hashing alone allow, with the client on the same
    # cores: the push rows' 1 GiB workloads and the skopeo row against
    # berth-sink, which verifies the digest and stores nothing.
    "$SINK_BIN" > "$WORK/sink.out" 2>> "$WORK/sink.log" &
    SINK_PID=$!
    for _ in $(seq 50); do
        [[ "$(head -n1 "$WORK/sink.out")" =~ listening\ on\ (http://[0-9.:]+) ]] \
            && sink_url="${BASH_REMATCH[1]}" && break
        sleep 0.1
    done
    mbs() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["mb_per_s"]) if not r["errors"] else 0)'; }
    sink_push=$(nice -n 10 "$BENCH_BIN" --url "$sink_url" --json -c 1 -n 2 push --size 1GiB | mbs || echo 0)
    sink_chunked=$(nice -n 10 "$BENCH_BIN" --url "$sink_url" --json -c 1 -n 2 push --size 1GiB --chunked | mbs || echo 0)
    sink_skopeo=$(nice -n 10 python3 "$ROOT/benches/skopeo_push.py" "$sink_url" "$SINK_PID" "$SKOPEO_N" "$WORK" | mbs || echo 0)
    stop_pid "$SINK_PID"; SINK_PID=""
    printf 'SHA256_MBS=%s\nDISK_WRITE_SYNC_MBS=%s\nDISK_WRITE_SYNC_RUNS=%s\nDISK_READ_DIRECT_MBS=%s\nPAGECACHE_READ_MBS=%s\nLOOPBACK_MBS=%s\n' \
        "${sha:-0}" "${dd_w:-0}" "${dd_all:-}" "${dd_r:-0}" "${dd_c:-0}" "${iperf:-0}" > "$out"
    printf 'SINK_PUSH_MBS=%s\nSINK_CHUNKED_MBS=%s\nSINK_SKOPEO_MBS=%s\n' \
        "${sink_push:-0}" "${sink_chunked:-0}" "${sink_skopeo:-0}" >> "$out"
    log "$(tr '\n' ' ' < "$out")"
}

# --- the two servers -----------------------------------------------------
DIST_URL="" BERTH_URL=""
start_dist() {
    local data="$WORK/dist-data" port
    rm -rf "$data"; mkdir -p "$data"
    port=$(free_port)
    # Debian's defaults, minus auth; access logs off (berth writes none either).
    cat > "$WORK/dist.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    docker-registry serve "$WORK/dist.yml" >> "$WORK/dist.log" 2>&1 &
    DIST_PID=$!
    DIST_URL="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$DIST_URL/v2/" && return 0
        kill -0 "$DIST_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "Distribution did not start:" >&2; tail -20 "$WORK/dist.log" >&2; exit 1
}
start_berth() {
    local data="$WORK/berth-data" line
    rm -rf "$data"; mkdir -p "$data"
    cat > "$WORK/berth.toml" <<EOF
delete_enabled = true

[auth]
anonymous_loopback = true
EOF
    : > "$WORK/berth.out"
    "$BERTH_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" --config "$WORK/berth.toml" \
        > "$WORK/berth.out" 2>> "$WORK/berth.log" &
    BERTH_PID=$!
    for _ in $(seq 100); do
        line=$(head -n1 "$WORK/berth.out")
        if [[ "$line" =~ listening\ on\ (http://[0-9.:]+) ]]; then
            BERTH_URL="${BASH_REMATCH[1]}"
            curl -sf -o /dev/null "$BERTH_URL/v2/" && return 0
        fi
        kill -0 "$BERTH_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "berth did not start (or /v2/ is not open to loopback):" >&2
    tail -20 "$WORK/berth.log" >&2; exit 1
}
fresh_servers() {
    stop_pid "$DIST_PID"; stop_pid "$BERTH_PID"; DIST_PID="" BERTH_PID=""
    start_dist
    start_berth
}

# record REGISTRY ID REP COMMAND... : runs COMMAND, which prints one result
# as JSON (berth-bench --json's fields), and appends it to RESULTS
record() {
    local reg="$1" id="$2" rep="$3" out
    shift 3
    if out=$(timeout 600 nice -n 10 "$@" 2>>"$WORK/bench.err"); then
        printf '{"reg":"%s","id":"%s","rep":%s,"r":%s}\n' "$reg" "$id" "$rep" "$out" >> "$RESULTS"
        python3 - "$reg" "$id" "$out" <<'EOF' >&2
import json, sys
reg, wid, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"    {reg:5} {wid:22} {r['ops_per_s']:10.1f} ops/s {r['mb_per_s']:9.1f} MB/s "
      f"p99 {r['p99_ms']:8.2f} ms  errors {r['errors']}  cpu {r['server_cpu_s'] or 0:.2f} s  "
      f"rss {(r['server_peak_rss_kib'] or 0)/1024:.1f} MiB")
EOF
    else
        log "$reg $id failed: $(tail -n1 "$WORK/bench.err")"
        printf '{"reg":"%s","id":"%s","rep":%s,"failed":true}\n' "$reg" "$id" "$rep" >> "$RESULTS"
    fi
}

# server_of REGISTRY : sets url and pid to that server's
server_of() {
    if [ "$1" = dist ]; then url="$DIST_URL" pid="$DIST_PID"; else url="$BERTH_URL" pid="$BERTH_PID"; fi
}

# run_one REGISTRY ID REP BENCH-ARGS... : one berth-bench measurement
run_one() {
    local reg="$1" id="$2" rep="$3" url pid
    shift 3
    server_of "$reg"
    record "$reg" "$id" "$rep" "$BENCH_BIN" --url "$url" --pid "$pid" --json --label "$reg" "$@"
}

# run_skopeo REGISTRY ID REP : SKOPEO_N skopeo copies of a fresh image
run_skopeo() {
    local reg="$1" id="$2" rep="$3" url pid
    server_of "$reg"
    record "$reg" "$id" "$rep" python3 "$ROOT/benches/skopeo_push.py" "$url" "$pid" "$SKOPEO_N" "$WORK"
}

# run_reps ID ARGS... : REPS repetitions, alternating which goes first, of
# $RUNNER (run_one unless set)
run_reps() {
    local id="$1" rep runner="${RUNNER:-run_one}"
    shift
    log "$id"
    for rep in $(seq "$REPS"); do
        if [ $((rep % 2)) = 1 ]; then
            "$runner" dist "$id" "$rep" "$@"; "$runner" berth "$id" "$rep" "$@"
        else
            "$runner" berth "$id" "$rep" "$@"; "$runner" dist "$id" "$rep" "$@"
        fi
    done
}

# --- the workloads -------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    LIM_SECS=1; DD_RUNS=1
    D=2; REPOS=100; BIG=1000; MIX_N=60; SMALL_N=1000; MID_N=200; BIG_N=20; PUT_REPOS=100; PUT_TAGS=300
    SKOPEO_N=2
else
    LIM_SECS=3; DD_RUNS=3
    D=5; REPOS=1000; BIG=10000; MIX_N=400; SMALL_N=3000; MID_N=400; BIG_N=40; PUT_REPOS=300; PUT_TAGS=1000
    SKOPEO_N=5
fi

# The limits are measured before and after the workloads; the targets are
# judged against the higher figure.
measure_limits "$WORK/limits-start.env"

# Idle memory: each server fresh, after a few seconds of nothing.
fresh_servers
sleep 5
idle_rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
printf 'DIST_IDLE_RSS=%s\nBERTH_IDLE_RSS=%s\n' "$(idle_rss "$DIST_PID")" "$(idle_rss "$BERTH_PID")" > "$WORK/idle.env"
log "idle RSS: $(tr '\n' ' ' < "$WORK/idle.env")"

# Manifest PUTs: many repositories at 8 threads, and one repository's tags
# pushed one after another (each PUT waits for its own synced commit).
log "manifest PUTs: $PUT_REPOS repositories x 10 tags at c=8; $PUT_TAGS tags into one repository at c=1"
for rep in $(seq "$REPS"); do
    fresh_servers
    for reg in dist berth; do
        run_one "$reg" manifest-put-c8 "$rep" -c 8 --prefix "put$rep" populate --repos "$PUT_REPOS" --tags 10 --big-tags 0
        run_one "$reg" tag-push-c1 "$rep" -c 1 --prefix "one$rep" populate --repos 1 --tags 0 --big-tags "$PUT_TAGS"
    done
done

log "lists: $REPOS repositories x 10 tags, one of $BIG tags"
fresh_servers
run_one dist populate 1 -c 8 populate --repos "$REPOS" --tags 10 --big-tags "$BIG"
run_one berth populate 1 -c 8 populate --repos "$REPOS" --tags 10 --big-tags "$BIG"
run_reps tags-list-c16 -c 16 -d "$D" tags-list --repos "$REPOS"
run_reps tags-big-c4 -c 4 -d "$D" tags-big
run_reps catalog-c16 -c 16 -d "$D" catalog

fresh_servers
run_reps root-c64 -c 64 -d "$D" root
for c in 16 64; do
    run_reps "manifest-get-c$c" -c "$c" -d "$D" manifest-get
    run_reps "head-blob-c$c" -c "$c" -d "$D" head-blob
done

# Blobs: a fresh pair of servers per workload keeps the disk use bounded.
for mode in "" chunked; do
    flag=""; [ -n "$mode" ] && flag="--chunked"
    name="push${mode:+-$mode}"
    fresh_servers; run_reps "$name-1MiB-c4" -c 4 -d "$D" -n "$SMALL_N" push --size 1MiB $flag
    fresh_servers; run_reps "$name-10MiB-c4" -c 4 -d "$D" -n "$MID_N" push --size 10MiB $flag
    fresh_servers; run_reps "$name-100MiB-c1" -c 1 -d "$D" -n "$BIG_N" push --size 100MiB $flag
    fresh_servers; run_reps "$name-1GiB-c1" -c 1 -d "$D" -n 2 push --size 1GiB $flag
done
fresh_servers
run_reps pull-1MiB-c4 -c 4 -d "$D" pull --size 1MiB
run_reps pull-10MiB-c4 -c 4 -d "$D" pull --size 10MiB
run_reps pull-100MiB-c1 -c 1 -d "$D" pull --size 100MiB
run_reps pull-1GiB-c1 -c 1 -d "$D" pull --size 1GiB
fresh_servers
run_reps mixed-c8 -c 8 -d $((D * 2)) -n "$MIX_N" mixed --sizes 1MiB,10MiB,100MiB --push-percent 25
fresh_servers
run_reps small-images-c8 -c 8 small-images --images 50
# A real client: skopeo pushing images of five layers (1-100 MiB).
fresh_servers
RUNNER=run_skopeo run_reps skopeo-push-5-layers

stop_pid "$DIST_PID"; stop_pid "$BERTH_PID"; DIST_PID="" BERTH_PID=""
measure_limits "$WORK/limits-end.env"
END_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
ELAPSED=$(( $(date +%s) - T0 ))

# --- the report ----------------------------------------------------------
export RESULTS WORK OUT QUICK REPS NOTE START_LOAD END_LOAD START_DATE ELAPSED
export BERTH_REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+local changes')"
export DIST_VERSION="$(docker-registry --version 2>/dev/null | awk '{print $NF}')"
# How much of scripts/symbol-order.txt names functions of this build: a
# stale list lays out less (scripts/symbol-order.sh remakes it).
ORDER_LIST="$ROOT/scripts/symbol-order.txt"
export ORDERED="$(grep -v '^#' "$ORDER_LIST" | sort -u \
    | comm -12 - <(nm "$BERTH_BIN" | awk '{print $NF}' | sort -u) | wc -l) of $(grep -vc '^#' "$ORDER_LIST")"
python3 - <<'PY'
import json, os, statistics

env = os.environ
def limits(name):
    d = dict(l.strip().split("=", 1) for l in open(os.path.join(env["WORK"], name)) if "=" in l)
    runs = d.pop("DISK_WRITE_SYNC_RUNS", "")
    return {k: float(v or 0) for k, v in d.items()}, runs
lim0, runs0 = limits("limits-start.env")
lim1, runs1 = limits("limits-end.env")
lim = {k: max(lim0[k], lim1[k]) for k in lim0}
runs = [json.loads(l) for l in open(env["RESULTS"]) if l.strip()]

def metric(wid):
    if wid == "populate" or wid.startswith(("manifest-put", "tag-push")): return "units_per_s", "manifest PUT/s"
    if wid.startswith("tags-big"): return "ops_per_s", "listings/s"
    if wid.startswith("catalog"): return "req_per_s", "pages/s"
    if wid.startswith("small-images"): return "ops_per_s", "images/s"
    if wid.startswith(("push", "pull", "mixed", "skopeo")): return "mb_per_s", "MB/s"
    return "ops_per_s", "req/s"

ids = []
for r in runs:
    if r["id"] not in ids: ids.append(r["id"])
med = lambda xs: statistics.median(xs) if xs else None

def summary(wid, reg):
    rs = [r["r"] for r in runs if r["id"] == wid and r["reg"] == reg and "r" in r]
    failed = sum(1 for r in runs if r["id"] == wid and r["reg"] == reg and r.get("failed"))
    key, _ = metric(wid)
    if not rs: return None
    per_unit = []
    for r in rs:
        cpu = r.get("server_cpu_s") or 0.0
        if key == "mb_per_s" and r["bytes"]: per_unit.append(("s/GB", cpu / (r["bytes"] / 1e9)))
        elif r["ops"]: per_unit.append(("ms/op", cpu / r["ops"] * 1e3))
    return {
        "v": med([r[key] for r in rs]),
        "p99": med([r["p99_ms"] for r in rs]),
        "cpu": med([r.get("server_cpu_s") or 0.0 for r in rs]),
        "cpu_unit": (per_unit[0][0], med([u for _, u in per_unit])) if per_unit else None,
        "rss": max((r.get("server_peak_rss_kib") or 0) for r in rs) / 1024,
        "errors": sum(r["errors"] for r in rs) + failed,
        "n": len(rs),
    }

def fmt(x):
    if x is None: return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.2f}"

rows, table = {}, []
table.append("| workload | unit | Distribution | berth | berth/Dist | p99 ms D / B | p99 Dist/berth | server CPU D / B | CPU per unit D / B | peak RSS MiB D / B | errors D / B |")
table.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for wid in ids:
    d, b = summary(wid, "dist"), summary(wid, "berth")
    rows[wid] = (d, b)
    _, unit = metric(wid)
    ratio = b["v"] / d["v"] if d and b and d["v"] else None
    pr = d["p99"] / b["p99"] if d and b and b["p99"] else None
    g = lambda s, k: fmt(s[k]) if s else "—"
    def cu(s):
        if not (s and s["cpu_unit"]): return "—"
        unit, v = s["cpu_unit"]
        # Small requests cost microseconds: show them so.
        return f"{v * 1000:,.1f} µs/op" if unit == "ms/op" and v < 1 else f"{fmt(v)} {unit}"
    table.append(f"| {wid} | {unit} | {g(d,'v')} | {g(b,'v')} | {fmt(ratio)}{'' if ratio is None or ratio >= 1 else ' ✗'} "
                 f"| {g(d,'p99')} / {g(b,'p99')} | {fmt(pr)} | {g(d,'cpu')} s / {g(b,'cpu')} s | {cu(d)} / {cu(b)} "
                 f"| {g(d,'rss')} / {g(b,'rss')}{'' if not (d and b) or b['rss'] <= d['rss'] else ' ✗'} "
                 f"| {d['errors'] if d else '—'} / {b['errors'] if b else '—'} |")

# Targets.
t = []
behind = [(w, b["v"] / d["v"]) for w, (d, b) in rows.items() if d and b and d["v"] and b["v"] < d["v"]]
t.append("- berth ahead of Distribution on every workload: " + (
    "**met**" if not behind else "**missed** on " + ", ".join(f"{w} ({r:.2f}x)" for w, r in behind)))
for w in ("manifest-get-c64", "head-blob-c64"):
    if w in rows and rows[w][0] and rows[w][1]:
        d, b = rows[w]; r = b["v"] / d["v"]
        t.append(f"- {w} >= 10x Distribution's req/s: {fmt(b['v'])} vs {fmt(d['v'])} = {r:.1f}x, **{'met' if r >= 10 else 'missed'}**")
bound = min(lim["SHA256_MBS"], lim["DISK_WRITE_SYNC_MBS"])
for w in ("push-1GiB-c1", "push-chunked-1GiB-c1"):
    if w in rows and rows[w][1]:
        v = rows[w][1]["v"]; pct = 100 * v / bound if bound else 0
        t.append(f"- {w}: berth {fmt(v)} MB/s = {pct:.0f}% of min(SHA-256 {fmt(lim['SHA256_MBS'])}, synced disk write {fmt(lim['DISK_WRITE_SYNC_MBS'])}) = {fmt(bound)} MB/s"
                 + (f", target 80%: **{'met' if pct >= 80 else 'missed'}**" if w == "push-1GiB-c1" else " (for information)"))
        sink = lim["SINK_CHUNKED_MBS" if "chunked" in w else "SINK_PUSH_MBS"]
        if sink:
            t.append(f"  - and {100 * v / sink:.0f}% of the same push to berth-sink (received and hashed, nothing stored), {fmt(sink)} MB/s")
if "skopeo-push-5-layers" in rows and rows["skopeo-push-5-layers"][1] and lim["SINK_SKOPEO_MBS"]:
    v = rows["skopeo-push-5-layers"][1]["v"]; sink = lim["SINK_SKOPEO_MBS"]
    t.append(f"- skopeo-push-5-layers: berth {fmt(v)} MB/s = {100 * v / sink:.0f}% of skopeo pushing to berth-sink, {fmt(sink)} MB/s (for information)")
if "pull-1GiB-c1" in rows and rows["pull-1GiB-c1"][1]:
    v = rows["pull-1GiB-c1"][1]["v"]; lb = lim["LOOPBACK_MBS"]; pct = 100 * v / lb if lb else 0
    t.append(f"- pull-1GiB-c1 (cached): berth {fmt(v)} MB/s = {pct:.0f}% of loopback TCP (iperf3, one stream) {fmt(lb)} MB/s, target 80%: **{'met' if pct >= 80 else 'missed'}**")
higher = [(w, d["rss"], b["rss"]) for w, (d, b) in rows.items() if d and b and b["rss"] > d["rss"]]
bmax = max((b["rss"] for d, b in rows.values() if b), default=0)
dmax = max((d["rss"] for d, b in rows.values() if d), default=0)
idle = dict(l.strip().split("=", 1) for l in open(os.path.join(env["WORK"], "idle.env")) if "=" in l)
t.append(f"- idle RSS (fresh server, 5 s after start): Distribution {idle.get('DIST_IDLE_RSS', '?')} MiB, berth {idle.get('BERTH_IDLE_RSS', '?')} MiB")
t.append(f"- peak RSS no higher than Distribution's: overall max berth {bmax:.1f} MiB vs Distribution {dmax:.1f} MiB; "
         + ("**met** on every workload" if not higher else "**missed** on " + ", ".join(f"{w} ({b:.1f} vs {d:.1f})" for w, d, b in higher)))
errs = [(w, d["errors"] if d else 0, b["errors"] if b else 0) for w, (d, b) in rows.items() if (d and d["errors"]) or (b and b["errors"])]
if errs:
    t.append("- errors seen: " + ", ".join(f"{w} (Dist {d}, berth {b})" for w, d, b in errs))

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
quick = env["QUICK"] == "1"
out = []
out.append("# berth vs CNCF Distribution: results" + (" (quick mode)" if quick else ""))
out.append("")
out.append(f"Written by `benches/compare.sh{' --quick' if quick else ''}` on {env['START_DATE']} in {int(env['ELAPSED'])//60} min {int(env['ELAPSED'])%60} s. "
           f"Machine: {os.cpu_count()} cores ({cpu}), {int(mem)/1024/1024:.1f} GiB memory, Linux {os.uname().release}. "
           f"berth {env['BERTH_REV']} ({env['ORDERED']} functions its code order lists found in the binary); "
           f"Distribution {env['DIST_VERSION']} (Debian docker-registry). "
           f"Load average at start {env['START_LOAD']}, at end {env['END_LOAD']}.")
out.append("")
out.append(f"Each figure is the median of {env['REPS']} runs (alternating which registry goes first), except populate (one run). "
           "The load generator (`berth-bench`, 2 threads) shares the cores with the server under test; the other server idles. "
           "Both store on a directory of the same disk, fresh per workload group. Push content is fresh random bytes every run, "
           "pre-hashed before the timer starts. CPU is the server process's own (utime+stime) over the measured phase; "
           "peak RSS is its VmHWM, reset at the start of each run, max over runs. MB = 10^6 bytes. "
           "Ratios: berth/Distribution for throughput and Distribution/berth for p99, so >1 means berth is better. "
           "Listings: tags-list reads one repository's 10 tags; tags-big reads all 10,000 tags of one repository following Link "
           "(Distribution ignores `n` and answers in one page, berth in pages of 100); catalog reads every page of `_catalog?n=100`.")
if env.get("NOTE"):
    out.append("")
    out.append(env["NOTE"])
out.append("")
out.extend(table)
out.append("")
out.append("## Physical limits on the same machine")
out.append("")
both = lambda k: f"{fmt(lim0[k])} / {fmt(lim1[k])} MB/s"
out.append("Measured before / after the workloads; the targets below use the higher figure.")
out.append("")
out.append(f"- SHA-256 on one core (`openssl speed -evp sha256 -bytes 1048576`): {both('SHA256_MBS')}")
out.append(f"- sequential disk write, 1 GiB with fdatasync (`dd conv=fdatasync`, median of {runs0.count('/') + 1}): {both('DISK_WRITE_SYNC_MBS')} (runs: {runs0} and {runs1} MB/s)")
out.append(f"- sequential disk read, uncached (`dd iflag=direct`): {both('DISK_READ_DIRECT_MBS')}; from the page cache: {both('PAGECACHE_READ_MBS')}")
out.append(f"- loopback TCP, one stream (`iperf3`, {3 if quick else 5} s): {both('LOOPBACK_MBS')}")
out.append(f"- pushes to `berth-sink`, which receives and hashes as a registry must and stores nothing (the load generator or skopeo on the same cores): "
           f"1 GiB {both('SINK_PUSH_MBS')}, 1 GiB in 8 MiB chunks {both('SINK_CHUNKED_MBS')}, skopeo's five-layer image {both('SINK_SKOPEO_MBS')}")
out.append("")
out.append("## Targets")
out.append("")
out.extend(t)
out.append("")
out.append("<details><summary>Every run</summary>")
out.append("")
out.append("| workload | registry | rep | ops | errors | secs | ops/s | MB/s | p50 ms | p99 ms | server CPU s | peak RSS MiB | load generator CPU s |")
out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for x in runs:
    if "r" not in x:
        out.append(f"| {x['id']} | {x['reg']} | {x['rep']} | failed | | | | | | | | | |"); continue
    r = x["r"]
    out.append(f"| {x['id']} | {x['reg']} | {x['rep']} | {r['ops']} | {r['errors']} | {r['secs']:.2f} | {r['ops_per_s']:.1f} | {r['mb_per_s']:.1f} "
               f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_s'] or 0:.2f} | {(r['server_peak_rss_kib'] or 0)/1024:.1f} | {r.get('client_cpu_s', 0):.2f} |")
out.append("")
out.append("</details>")
text = "\n".join(out) + "\n"
open(env["OUT"], "w").write(text)
print(text)
PY
log "done in ${ELAPSED}s; wrote $OUT"
