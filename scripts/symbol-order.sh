#!/usr/bin/env bash
# Remakes scripts/symbol-order.txt, the order in which scripts/build-dist.sh
# lays out berth's functions: the dist build runs under valgrind's callgrind,
# first starting and idling (its periodic work included), then serving
# berth-bench's workloads. What starting and idling ran comes first, then
# what serving ran; everything else follows in the linker's own order.
#
#   scripts/symbol-order.sh     (about 10 minutes with the builds; needs
#                               valgrind, apt-get installed if missing)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind

"$ROOT/scripts/build-dist.sh" -q
(cd "$ROOT" && cargo build --release -q -p berth-bench)
BIN="$TARGET_DIR/dist/berth"
BENCH="$TARGET_DIR/release/berth-bench"

WORK="$(mktemp -d /var/tmp/berth-symbol-order.XXXXXX)"
PID=""
trap '[ -z "$PID" ] || kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
printf '[auth]\nanonymous_loopback = true\n' > "$WORK/config.toml"
valgrind --tool=callgrind --dump-instr=no --dump-line=no --demangle=no \
    --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --config "$WORK/config.toml" \
    > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 600); do grep -q listening "$WORK/stdout" && break; sleep 0.2; done
URL="$(grep -o 'http://[0-9.:]*' "$WORK/stdout" | head -1)"
[ -n "$URL" ] || { cat "$WORK/stderr" >&2; exit 1; }
sleep 15
# Part 1 (callgrind.out.1): starting and idling.
callgrind_control --dump "$PID" > /dev/null
while read -r workload; do
    # shellcheck disable=SC2086 # one workload's arguments
    "$BENCH" --url "$URL" $workload > /dev/null
done <<'WORKLOADS'
-n 50 root
-n 20 manifest-get
-n 20 head-blob
-n 5 push --size 1MiB
-n 3 push --chunked --size 10MiB
-n 5 pull --size 1MiB
-c 2 populate --repos 20 --tags 5 --big-tags 300
-n 10 tags-list --repos 20
-n 3 tags-big
-n 3 catalog
-n 10 -c 2 mixed --sizes 1MiB --push-percent 25
-c 2 small-images --images 3
WORKLOADS
kill -INT "$PID"
wait "$PID" || true
PID=""

# Each function with a cost, in the order callgrind first names it (part 1,
# then the rest), kept if the binary defines it. Written aside and moved in
# whole, so that a run that fails leaves the list as it was.
python3 - "$BIN" "$WORK/callgrind.out.1" "$WORK/callgrind.out" > "$WORK/symbol-order.txt" <<'PY'
import re, subprocess, sys
binary, parts = sys.argv[1], sys.argv[2:]
symbols = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
defined = {
    fields[2]
    for fields in map(str.split, symbols.splitlines())
    if len(fields) == 3 and fields[1] in "tTwW"
}
order, seen = [], set()
for part in parts:
    names = {}
    for line in open(part, errors="replace"):
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, key, name = m.groups()
        if name:
            names[key] = name
        name = names.get(key)
        if kind == "fn" and name in defined and name not in seen:
            seen.add(name)
            order.append(name)
print("# berth's functions in the order scripts/build-dist.sh lays them out:")
print("# made by scripts/symbol-order.sh (starting and idling first, then serving).")
print("\n".join(order))
PY
mv "$WORK/symbol-order.txt" "$ROOT/scripts/symbol-order.txt"
echo "scripts/symbol-order.txt: $(grep -vc '^#' "$ROOT/scripts/symbol-order.txt") functions"
