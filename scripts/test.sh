#!/usr/bin/env bash
# Runs berth's whole test suite on a fresh Debian machine: installs the real
# clients the tests drive (skopeo, podman, containerd, docker.io, oras, ...),
# then runs every unit and integration test. Each test starts the daemons it
# uses (berth, containerd, dockerd) itself, on private sockets and temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup puts cargo in ~/.cargo/bin, which a login shell's PATH may lack.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bash scripts/install-test-deps.sh
# The push-to-deploy tests run a real Kubernetes API server, built once from
# Debian's source package and cached outside the checkout.
bash scripts/kube-test-cluster.sh build

# A target directory kept outside the checkout makes repeated runs fast;
# any directory works.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
# Temporary image layers go here rather than filling /var/tmp.
export TMPDIR="${TMPDIR:-/tmp}"

# The suite runs twice: on the embedded SQLite metadata (the default), then
# on PostgreSQL, a throwaway cluster started here (scripts/test-postgres.sh)
# whose URL is exported as BERTH_TEST_POSTGRES; tests/common then gives each
# berth a database of its own there. Arguments go to both `cargo test` runs.
sqlite_log=$(mktemp)
postgres_log=$(mktemp)
postgres_dir=""
cleanup() {
    rm -f "$sqlite_log" "$postgres_log"
    if [ -n "$postgres_dir" ]; then
        bash scripts/test-postgres.sh stop "$postgres_dir" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# "passed failed" summed over every test binary of one run's log.
counts() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { printf "%d %d\n", p, f }' "$1"
}

echo "=== tests on SQLite ==="
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$sqlite_log"
sqlite_status=${PIPESTATUS[0]}
# The benchmark tools (bench/: the load generator and berth-sink) have unit
# tests of their own; they touch no database, so they run once, here, in a
# whole run.
if [ $# -eq 0 ]; then
    cargo test --no-fail-fast -p berth-bench 2>&1 | tee -a "$sqlite_log"
    bench_status=${PIPESTATUS[0]}
    [ "$sqlite_status" -ne 0 ] || sqlite_status=$bench_status
fi
set -e

# The PostgreSQL pass runs the unit tests and every integration test binary
# but tests/image.rs: that one tests the container image (its build, user,
# volume, HEALTHCHECK) with berth inside a container of the test's own
# dockerd, builds a Debian base image with debootstrap first (the suite's
# longest test), and reaches metadata through the same code as every other
# test; doc tests touch no database either. Arguments that pick targets
# themselves (--test, --lib, ...) replace this selection.
postgres_targets=(--lib --bins)
for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    [ "$name" = image ] && continue
    postgres_targets+=(--test "$name")
done
for arg in "$@"; do
    [ "$arg" = -- ] && break
    case "$arg" in
    --test | --test=* | --tests | --lib | --bin | --bin=* | --bins | --doc | --example | --example=* | --examples | --bench | --bench=* | --benches | --all-targets)
        postgres_targets=()
        break
        ;;
    esac
done

echo "=== tests on PostgreSQL ==="
postgres_dir=$(mktemp -d /tmp/berth-pg.XXXXXX)
set +e
BERTH_TEST_POSTGRES=$(bash scripts/test-postgres.sh start "$postgres_dir")
postgres_status=$?
set -e
if [ "$postgres_status" -eq 0 ]; then
    export BERTH_TEST_POSTGRES
    echo "PostgreSQL at $BERTH_TEST_POSTGRES"
    set +e
    cargo test --no-fail-fast "${postgres_targets[@]}" "$@" 2>&1 | tee "$postgres_log"
    postgres_status=${PIPESTATUS[0]}
    set -e
else
    echo "PostgreSQL did not start: the PostgreSQL pass did not run" >&2
fi

# One line for each pass, summed over its test binaries, then the total.
read -r sqlite_passed sqlite_failed < <(counts "$sqlite_log")
read -r postgres_passed postgres_failed < <(counts "$postgres_log")
echo "sqlite: $sqlite_passed passed, $sqlite_failed failed"
echo "postgres: $postgres_passed passed, $postgres_failed failed"
echo "$((sqlite_passed + postgres_passed)) passed, $((sqlite_failed + postgres_failed)) failed"
if [ "$sqlite_status" -ne 0 ]; then
    exit "$sqlite_status"
fi
exit "$postgres_status"
