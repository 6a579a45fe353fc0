#!/usr/bin/env bash
# Runs berth's whole test suite on a fresh Debian machine: installs the real
# clients the tests drive (skopeo, podman, containerd, docker.io, oras, ...),
# then runs every unit and integration test. Each test starts the daemons it
# uses (berth, containerd, dockerd) itself, on private sockets and temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
# The push-to-deploy tests run a real Kubernetes API server, built once from
# Debian's source package and cached outside the checkout.
bash scripts/kube-test-cluster.sh build

# A target directory kept outside the checkout makes repeated runs fast;
# any directory works.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
# Temporary image layers go here rather than filling /var/tmp.
export TMPDIR="${TMPDIR:-/tmp}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
