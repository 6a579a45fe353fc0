#!/usr/bin/env bash
# Sustained load: berth (release build, SQLite and blobs on disk) under
# CONNECTIONS concurrent connections of mixed pushes and pulls for SECONDS,
# with berth-bench; prints its report (operations, errors, p50/p99
# latency) and berth's peak RSS and CPU over the run.
#
#   benches/soak.sh [SECONDS] [CONNECTIONS]     # default 180 s, 500
#
# Builds with `cargo build --release` into $CARGO_TARGET_DIR (or target/).
# The data directory goes under $SOAK_DIR (default /var/tmp), removed at
# the end.
set -euo pipefail
seconds=${1:-180}
connections=${2:-500}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p berth --bin berth
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p berth-bench
data=$(mktemp -d "${SOAK_DIR:-/var/tmp}/berth-soak.XXXXXX")
berth_pid=
cleanup() {
    [ -n "$berth_pid" ] && kill "$berth_pid" 2>/dev/null && wait "$berth_pid" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT
printf '[auth]\nanonymous_loopback = true\n' >"$data/config.toml"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=berth=warn "$target/release/berth" serve --listen "127.0.0.1:$port" \
    --data-dir "$data" --config "$data/config.toml" >"$data/berth.out" 2>"$data/berth.log" &
berth_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
# berth-bench opens one connection per operation in flight.
ulimit -n "$(ulimit -Hn)"
"$target/release/berth-bench" --url "http://127.0.0.1:$port" --pid "$berth_pid" \
    -c "$connections" -d "$seconds" -n 2000000 --threads 2 --label "soak" \
    mixed --sizes 16KiB,256KiB,1MiB --push-percent 30
