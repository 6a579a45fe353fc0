#!/usr/bin/env bash
# Install the real OCI clients + reference registry used by the integration tests
# (Debian/Ubuntu, apt only). Idempotent: installs only what is missing and runs
# `apt-get update` only when something has to be installed.
#
#   skopeo, podman (+conmon, crun, runc, CNI plugins), containerd (ctr),
#   docker.io (dockerd; the `docker` CLI it ships in /usr/bin does not shadow
#   an existing /usr/local/bin/docker), docker-registry (Distribution 2.8),
#   plus jq/curl/tar/gzip/python3 used by the test scripts, schemathesis
#   (PyPI, in a venv under /var/tmp) for the OpenAPI test, openssl (a test CA
#   for the HTTPS tests, the Kubernetes Secret's key) and apache2-utils
#   (htpasswd, for the import test); for tests/image.rs debootstrap and
#   debian-archive-keyring (the image's base, made locally) and binutils
#   (objcopy; readelf for tests/ship.rs); systemd (systemd-analyze, to verify
#   deploy/berth.service) and util-linux (setpriv); prometheus (promtool,
#   which checks the /metrics exposition format); postgresql (initdb,
#   pg_ctl, postgres and psql, for the suite's PostgreSQL pass: a
#   throwaway cluster of scripts/test-postgres.sh, never Debian's own).
#
# No daemons are left running: service start-up during install is suppressed via a
# temporary /usr/sbin/policy-rc.d (only if none exists already), and the tests
# start their own containerd/dockerd/registry instances on private sockets.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# "package:command" — a package is skipped when it is already installed per dpkg,
# or when its command is already on PATH (e.g. docker-ce/containerd.io from Docker's
# own repo on CI runners: installing docker.io/containerd/runc on top would conflict).
PKGS=(
    skopeo:skopeo
    podman:podman
    conmon:conmon
    crun:crun
    runc:runc
    containernetworking-plugins:
    containerd:ctr
    docker.io:dockerd
    iptables:iptables
    docker-registry:docker-registry
    jq:jq
    curl:curl
    tar:tar
    gzip:gzip
    python3:python3
    openssl:openssl
    apache2-utils:htpasswd
    debootstrap:debootstrap
    debian-archive-keyring:
    binutils:readelf
    systemd:systemd-analyze
    util-linux:setpriv
    prometheus:promtool
    postgresql:
    # tests/ui.rs drives a real browser through WebDriver.
    chromium:chromium
    chromium-driver:chromedriver
)

missing=()
for entry in "${PKGS[@]}"; do
    p=${entry%%:*}
    c=${entry#*:}
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        continue
    fi
    if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then
        continue
    fi
    missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-deps: all packages already installed"
else
    echo "install-test-deps: installing: ${missing[*]}"
    # Keep apt from starting system daemons (dockerd/containerd/registry) on
    # sysvinit-style containers; they would conflict with the tests' own instances.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then
            $SUDO rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup EXIT

    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
fi

# Installs PyPI packages (`$2`...) into the venv `$1`, made afresh. Each
# tool gets a venv of its own: its many dependencies stay out of the
# system's Python, and Debian's Python refuses `pip install` outside a venv.
pip_venv() {
    local venv=$1
    shift
    if ! python3 -m venv --clear "$venv" 2>/dev/null; then
        # Debian's Python keeps venv (and ensurepip) in a package of its own.
        $SUDO apt-get update -q
        $SUDO apt-get install -y -q --no-install-recommends python3-venv
        python3 -m venv --clear "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

# The ORAS Python client (PyPI), for the referrers and signature tests;
# tests/common::oras_python looks for it here.
ORAS_VERSION=0.2.43
ORAS_VENV=/var/tmp/berth-oras
if ! "$ORAS_VENV/bin/python" -c "import oras.client, importlib.metadata as m; assert m.version('oras') == '$ORAS_VERSION'" 2>/dev/null; then
    echo "install-test-deps: installing oras $ORAS_VERSION from PyPI"
    pip_venv "$ORAS_VENV" "oras==$ORAS_VERSION"
fi

# schemathesis (PyPI), which fuzzes the admin API against its OpenAPI
# document (tests/openapi.rs). tests/openapi.rs looks for it here.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=/var/tmp/berth-schemathesis
if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    echo "install-test-deps: installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
    pip_venv "$SCHEMATHESIS_VENV" "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$SCHEMATHESIS_VENV/bin/schemathesis" --version

# moto (PyPI), a local S3-compatible server for the S3 storage and replica
# tests. tests/common/s3.rs looks for it here, then on PATH.
MOTO_VERSION=5.2.1
MOTO_VENV=/var/tmp/berth-moto
if ! "$MOTO_VENV/bin/python" -c "import moto, flask; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
    echo "install-test-deps: installing moto $MOTO_VERSION from PyPI"
    pip_venv "$MOTO_VENV" "moto[server]==$MOTO_VERSION"
fi
"$MOTO_VENV/bin/moto_server" --help >/dev/null

# Sanity: report versions (fails loudly if something is still missing).
for c in skopeo podman ctr containerd dockerd docker-registry debootstrap objcopy readelf systemd-analyze setpriv promtool psql; do
    command -v "$c" >/dev/null 2>&1 || { echo "install-test-deps: '$c' not found after install" >&2; exit 1; }
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-test-deps: no initdb under /usr/lib/postgresql after install" >&2; exit 1; }
echo "docker CLI used: $(command -v docker) ($(docker --version 2>/dev/null || true))"
skopeo --version
podman --version
containerd --version
dockerd --version
docker-registry --version
promtool --version
