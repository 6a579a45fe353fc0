#!/usr/bin/env bash
# A throw-away, node-less Kubernetes control plane on 127.0.0.1 for tests that
# need a real API server (etcd + kube-apiserver + kube-controller-manager).
#
# Usage:
#   scripts/kube-test-cluster.sh build       # install deps, build + cache binaries
#   scripts/kube-test-cluster.sh start DIR   # start a cluster, state in DIR; prints DIR/env
#   scripts/kube-test-cluster.sh stop DIR    # stop it (DIR is left in place)
#   scripts/kube-test-cluster.sh status DIR  # exit 0 if every recorded process is alive
#
# Typical test use:
#   scripts/kube-test-cluster.sh build
#   dir=$(mktemp -d); envfile=$(scripts/kube-test-cluster.sh start "$dir")
#   set -a; . "$envfile"; set +a
#   "$KUBECTL" get deploy -A      # KUBECONFIG is the admin one
#   scripts/kube-test-cluster.sh stop "$dir"
#
# build
#   No Debian package ships kube-apiserver, so it is built from Debian's source
#   package `kubernetes` (bookworm: 1.20.5+really1.20.2, the upstream v1.20.2
#   tree with vendor/), offline, with Debian's golang-go. kubectl is built from
#   the same tree (cheap once the apiserver is built). The binaries are cached in
#   $BERTH_KUBE_CACHE (default /var/tmp/berth-kube/bin), outside any checkout;
#   when all three are there and run, `build` only checks the runtime packages
#   and returns within a second. A cold build took 10 minutes on an idle
#   2-core machine (allow 20-30 when it is shared) and about 1.5 GB of memory;
#   it runs under `nice -n 10`. Binaries: ~250 MB.
#   Sources and the Go build cache go to $BERTH_KUBE_WORK (default
#   /var/tmp/berth-kube/work) and are removed after a successful build
#   (keep them with BERTH_KUBE_KEEP_WORK=1). A lock file serialises builds.
#   Installs when missing: golang-go rsync jq dpkg-dev etcd-server openssl curl
#   golang-github-modern-go-reflect2-dev (and runs `apt-get update` once first).
#
#   Build pitfalls handled here:
#   - `apt-get source` needs deb-src entries; none are configured by default. One
#     is derived from the machine's own Debian entries (deb822 *.sources or
#     one-line *.list / sources.list, same URIs, suites and components, suites
#     of this release only) and written to
#     /etc/apt/sources.list.d/berth-kube-src.sources (or .list).
#   - The vendored github.com/modern-go/reflect2 v1.0.1 compiles with Go >= 1.18
#     but crashes at run time (json-iterator: its linkname'd map iteration no
#     longer matches the runtime). vendor/ gets Debian's reflect2 1.0.2 from
#     golang-github-modern-go-reflect2-dev instead (its go.mod is left out; the
#     1.20 build runs in GOPATH mode, GO111MODULE=off, so vendor/modules.txt
#     is not checked against it).
#   - There is no .git in the source package: hack/lib/version.sh would build a
#     version-less binary, so KUBE_GIT_VERSION_FILE supplies v1.20.2.
#   - The build scripts use rsync (not in the base image) and jq.
#   - CGO_ENABLED=0 gives static binaries (as Debian's rules do); HOME and
#     GOCACHE point into the work dir so nothing lands in root's home.
#
# start DIR
#   Everything listens on 127.0.0.1 only, on free ports picked at start:
#   - etcd (Debian's etcd-server), --data-dir DIR/etcd, log DIR/etcd.log
#   - kube-apiserver, --secure-port PORT, --insecure-port=0, serving cert
#     self-generated in DIR/certs (apiserver.crt holds leaf + CA; the CA alone is
#     copied to DIR/ca.crt). SANs: IP 127.0.0.1, IP 10.0.0.1, DNS kubernetes,
#     kubernetes.default, kubernetes.default.svc -- NOT "localhost": connect to
#     https://127.0.0.1:PORT. Authn: static tokens (DIR/tokens.csv): "admin" in
#     group system:masters, "limited" with no RBAC bindings (gets 403 on
#     anything beyond discovery). Authz: Node,RBAC. Service account signing key
#     DIR/sa.key (RSA, openssl), issuer https://kubernetes.default.svc.
#     Service CIDR 10.0.0.0/24. --endpoint-reconciler-type=none: the
#     "kubernetes" Service gets no Endpoints (a loopback address is rejected
#     there and would only fill the log with errors every 10 s).
#     Log DIR/kube-apiserver.log
#   - kube-controller-manager, no HTTP(S) serving, controllers
#     $BERTH_KUBE_CONTROLLERS (default deployment,replicaset,statefulset,daemonset,serviceaccount,
#     serviceaccount-token,namespace,garbagecollector,job). namespace and
#     garbagecollector are there so that deleting a namespace or a Deployment
#     completes. Log DIR/kube-controller-manager.log
#   There are no nodes: pods stay Pending, which is expected. So a rollout
#   never completes: after an image change the new ReplicaSet gets 1 replica
#   (maxSurge 25% of 2, rounded up), the old one keeps 2, and after
#   progressDeadlineSeconds (600 s) the Progressing condition turns False.
#   metadata.generation / status.observedGeneration do advance at once.
#   API groups of 1.20: apps/v1 Deployments, batch/v1 Jobs, but CronJob only
#   as batch/v1beta1, PodDisruptionBudget only policy/v1beta1, no
#   autoscaling/v2 and no discovery.k8s.io/v1. Server-side apply (beta) works.
#   Files written: DIR/admin.kubeconfig, DIR/limited.kubeconfig (CA embedded,
#   bearer tokens), DIR/ca.crt, DIR/pids ("name pid" per line) and DIR/env:
#     KUBECONFIG=DIR/admin.kubeconfig     KUBE_APISERVER=https://127.0.0.1:PORT
#     KUBE_TOKEN=<admin token>            KUBE_CA=DIR/ca.crt
#     KUBE_LIMITED_TOKEN=<limited token>  KUBE_LIMITED_KUBECONFIG=DIR/limited.kubeconfig
#     KUBECTL=<cache>/kubectl             ETCD_ENDPOINT=http://127.0.0.1:PORT
#   `start` returns once /readyz says ok and the service account "default" in
#   namespace "default" exists with its token secret (pods can be admitted).
#   Every wait is bounded by $BERTH_KUBE_WAIT seconds (default 60) and on
#   failure prints the tail of the relevant log, stops what it started and
#   exits non-zero. Starting again on the same DIR reuses etcd data, keys,
#   tokens and certs. The daemons are detached (setsid, stdio to the logs), so
#   `envfile=$(... start DIR)` returns.
#
# stop DIR
#   SIGTERM to the recorded processes in reverse start order, waits (bounded),
#   then SIGKILL; removes DIR/pids and leaves everything else in DIR.
set -euo pipefail

KUBE_VERSION=v1.20.2
KUBE_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56   # upstream v1.20.2
CACHE=${BERTH_KUBE_CACHE:-/var/tmp/berth-kube/bin}
WORK=${BERTH_KUBE_WORK:-/var/tmp/berth-kube/work}
WAIT=${BERTH_KUBE_WAIT:-60}
CONTROLLERS=${BERTH_KUBE_CONTROLLERS:-deployment,replicaset,statefulset,daemonset,serviceaccount,serviceaccount-token,namespace,garbagecollector,job}
BINS=(kube-apiserver kube-controller-manager kubectl)

log() { echo "kube-test-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

# What changes the system (apt, /etc/apt) runs as root: directly when this
# script is root, else through sudo.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# ---------------------------------------------------------------- packages

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -qq >&2
        APT_UPDATED=1
    fi
}

ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
        die "need root (or sudo) to install: ${missing[*]}"
    fi
    apt_update_once
    log "installing ${missing[*]}"
    # policy-rc.d keeps the etcd package from starting a system-wide etcd
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?
    [ "$made_policy" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get install failed"
}

RUNTIME_PKGS=(etcd-server openssl curl)

# Add deb-src entries mirroring the machine's own entries for this Debian
# release (same URIs/suites/components); no host name is hard-coded.
ensure_deb_src() {
    if apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
        return 0
    fi
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell the Debian release (VERSION_CODENAME in /etc/os-release)"
    local out822=/etc/apt/sources.list.d/berth-kube-src.sources
    local outlist=/etc/apt/sources.list.d/berth-kube-src.list
    local f tmp822 tmplist
    tmp822=$(mktemp); tmplist=$(mktemp)
    # deb822 files: copy "Types: deb" stanzas whose suites belong to this release
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        [ "$f" = "$out822" ] && continue
        awk -v rel="$codename" '
            function flush() {
                if (n > 0 && isdeb && enabled && suites != "") {
                    for (i = 1; i <= n; i++) {
                        l = lines[i]
                        if (l ~ /^Types:/) l = "Types: deb-src"
                        else if (l ~ /^Suites:/) l = "Suites:" suites
                        print l
                    }
                    print ""
                }
                n = 0; isdeb = 0; enabled = 1; suites = ""
            }
            BEGIN { n = 0; isdeb = 0; enabled = 1; suites = "" }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            {
                lines[++n] = $0
                if ($1 == "Types:") { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
                if ($1 == "Enabled:" && tolower($2) == "no") enabled = 0
                if ($1 == "Suites:") {
                    for (i = 2; i <= NF; i++) if ($i == rel || index($i, rel "-") == 1) suites = suites " " $i
                }
            }
            END { flush() }' "$f" >> "$tmp822"
    done
    # one-line format
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        [ "$f" = "$outlist" ] && continue
        awk -v rel="$codename" '
            $1 == "deb" {
                # deb [opts] uri suite comps...
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                suite = $(i + 1)
                if (suite == rel || index(suite, rel "-") == 1) { sub(/^deb/, "deb-src"); print }
            }' "$f" >> "$tmplist"
    done
    if [ -s "$tmp822" ]; then
        $SUDO install -m 644 "$tmp822" "$out822"
        log "wrote $out822"
    fi
    if [ -s "$tmplist" ]; then
        $SUDO install -m 644 "$tmplist" "$outlist"
        log "wrote $outlist"
    fi
    rm -f "$tmp822" "$tmplist"
    [ -e "$out822" ] || [ -e "$outlist" ] || die "no apt entry for $codename found to derive deb-src from"
    log "apt-get update (deb-src)"
    $SUDO apt-get update -qq >&2
    APT_UPDATED=1
    apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes' \
        || die "source package kubernetes not found after adding deb-src"
}

# ---------------------------------------------------------------- build

bin_ok() {
    case "$1" in
        kubectl) "$CACHE/kubectl" version --client --short 2>/dev/null | grep -q "$KUBE_VERSION" ;;
        *) "$CACHE/$1" --version 2>/dev/null | grep -q "$KUBE_VERSION" ;;
    esac
}

cached_ok() {
    local b
    for b in "${BINS[@]}"; do
        [ -x "$CACHE/$b" ] && bin_ok "$b" || return 1
    done
}

cmd_build() {
    ensure_pkgs "${RUNTIME_PKGS[@]}"
    if cached_ok; then
        log "cached binaries OK in $CACHE"
        return 0
    fi
    mkdir -p "$CACHE" "$WORK"
    exec 9> "$WORK/.build.lock"
    if ! flock -n 9; then
        log "another build is running; waiting for it"
        flock 9
        if cached_ok; then log "cached binaries OK in $CACHE"; return 0; fi
    fi
    local t0=$SECONDS
    ensure_pkgs golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev
    ensure_deb_src

    local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -f "$reflect2/reflect2.go" ] || die "$reflect2 missing (golang-github-modern-go-reflect2-dev)"

    local src="$WORK/src"
    rm -rf "$src"
    mkdir -p "$src"
    # apt downloads as the _apt user where it can write (avoids its warning)
    id _apt >/dev/null 2>&1 && chown _apt "$src" || true
    log "apt-get source kubernetes into $src"
    (cd "$src" && apt-get source -qq kubernetes >&2)
    local tree
    tree=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
    [ -n "$tree" ] && [ -f "$tree/cmd/kube-apiserver/apiserver.go" ] || die "no kubernetes tree under $src"

    # reflect2 1.0.1 -> Debian's 1.0.2 (Go >= 1.18 runtime compatibility)
    rm -rf "$tree/vendor/github.com/modern-go/reflect2"
    mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
    find "$reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) \
        -exec cp {} "$tree/vendor/github.com/modern-go/reflect2/" \;

    cat > "$WORK/version.env" <<EOF
KUBE_GIT_COMMIT='$KUBE_COMMIT'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='$KUBE_VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF
    mkdir -p "$WORK/home" "$WORK/gocache"
    log "building ${BINS[*]} (nice -n 10; this takes 10-30 minutes); log: $WORK/build.log"
    local what="" b
    for b in "${BINS[@]}"; do what+="cmd/$b "; done
    if ! (cd "$tree" && env HOME="$WORK/home" GOCACHE="$WORK/gocache" GOPATH="$WORK/home/go" \
            CGO_ENABLED=0 KUBE_GIT_VERSION_FILE="$WORK/version.env" \
            nice -n 10 make WHAT="${what% }") > "$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log" >&2
        die "build failed (full log: $WORK/build.log)"
    fi
    for b in "${BINS[@]}"; do
        local out
        out=$(find "$tree/_output" -type f -path "*/bin/$b" | head -n1)
        [ -n "$out" ] || die "$b not found under $tree/_output"
        install -m 755 "$out" "$CACHE/.$b.new"
        mv -f "$CACHE/.$b.new" "$CACHE/$b"
    done
    cached_ok || die "built binaries do not report $KUBE_VERSION"
    if [ "${BERTH_KUBE_KEEP_WORK:-0}" != 1 ]; then
        rm -rf "$src" "$WORK/gocache" "$WORK/home"
    fi
    log "built ${BINS[*]} into $CACHE in $(( SECONDS - t0 ))s"
}

# ---------------------------------------------------------------- start/stop

# A port the kernel hands out for bind(port 0) has no socket on it at all.
# Probing with a connect, as this did before, misses ports that a finished
# client connection still holds in TIME_WAIT: binding those fails, and a
# test run opens enough connections that three picks in a row did.
declare -A USED_PORTS=()
free_port() {
    local p i
    for i in $(seq 1 20); do
        p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        [ -n "${USED_PORTS[$p]:-}" ] && continue
        USED_PORTS[$p]=1
        echo "$p"
        return 0
    done
    die "no free port found"
}

pid_alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }

# fail NAME LOG MESSAGE: print the log tail, stop what we started, exit 1
START_DIR=
fail() {
    local logf=$1; shift
    log "error: $*"
    if [ -f "$logf" ]; then
        log "---- last lines of $logf ----"
        tail -n 30 "$logf" >&2
        log "----"
    fi
    [ -n "$START_DIR" ] && cmd_stop "$START_DIR" >/dev/null 2>&1 || true
    exit 1
}

# launch NAME CMD...: start detached, log to DIR/NAME.log, record pid
launch() {
    local name=$1; shift
    setsid "$@" < /dev/null >> "$START_DIR/$name.log" 2>&1 &
    local pid=$!
    echo "$name $pid" >> "$START_DIR/pids"
    eval "PID_${name//-/_}=$pid"
}

# wait_for NAME LOGFILE DESCRIPTION CMD...: poll CMD until it succeeds
wait_for() {
    local name=$1 logf=$2 what=$3; shift 3
    local pidvar="PID_${name//-/_}" deadline=$(( SECONDS + WAIT ))
    while ! "$@" >/dev/null 2>&1; do
        pid_alive "${!pidvar}" || fail "$logf" "$name exited while waiting for $what"
        [ "$SECONDS" -lt "$deadline" ] || fail "$logf" "timed out after ${WAIT}s waiting for $what"
        sleep 0.3
    done
}

write_kubeconfig() { # FILE USER TOKEN
    local ca_b64
    ca_b64=$(base64 -w0 < "$DIR/ca.crt")
    cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-test
  cluster:
    server: $APISERVER
    certificate-authority-data: $ca_b64
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@berth-test
  context:
    cluster: berth-test
    user: $2
    namespace: default
current-context: $2@berth-test
EOF
    chmod 600 "$1"
}

cmd_start() {
    DIR=${1:?usage: $0 start DIR}
    for b in "${BINS[@]}"; do
        [ -x "$CACHE/$b" ] || die "$CACHE/$b missing: run '$0 build' first"
    done
    command -v etcd >/dev/null || die "etcd missing: run '$0 build' (installs etcd-server)"
    command -v openssl >/dev/null && command -v curl >/dev/null || die "openssl/curl missing"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ -f "$DIR/pids" ]; then
        while read -r _ pid; do
            pid_alive "$pid" && die "a cluster is already running in $DIR (pid $pid); stop it first"
        done < "$DIR/pids"
        rm -f "$DIR/pids"
    fi
    START_DIR=$DIR
    local t0=$SECONDS
    : > "$DIR/pids"
    mkdir -p "$DIR/certs" "$DIR/etcd"
    chmod 700 "$DIR/etcd"

    # keys and tokens (kept across restarts on the same DIR)
    if [ ! -s "$DIR/sa.key" ]; then
        openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
        openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
    fi
    if [ ! -s "$DIR/tokens.csv" ]; then
        local admin_tok limited_tok
        admin_tok=$(openssl rand -hex 24)
        limited_tok=$(openssl rand -hex 24)
        printf '%s,admin,uid-admin,"system:masters"\n%s,limited,uid-limited\n' \
            "$admin_tok" "$limited_tok" > "$DIR/tokens.csv"
        chmod 600 "$DIR/tokens.csv"
    fi
    ADMIN_TOKEN=$(awk -F, '$2 == "admin" { print $1 }' "$DIR/tokens.csv")
    LIMITED_TOKEN=$(awk -F, '$2 == "limited" { print $1 }' "$DIR/tokens.csv")

    local etcd_client etcd_peer api_port
    etcd_client=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
    ETCD=http://127.0.0.1:$etcd_client
    APISERVER=https://127.0.0.1:$api_port

    launch etcd etcd --name berth-test --data-dir "$DIR/etcd" \
        --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "berth-test=http://127.0.0.1:$etcd_peer" \
        --initial-cluster-state new --logger=zap --log-level warn
    wait_for etcd "$DIR/etcd.log" "etcd health" \
        sh -c "curl -fsS --max-time 2 '$ETCD/health' | grep -q '\"health\":\"true\"'"

    launch kube-apiserver "$CACHE/kube-apiserver" \
        --etcd-servers="$ETCD" \
        --insecure-port=0 \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
        --secure-port="$api_port" \
        --cert-dir="$DIR/certs" \
        --token-auth-file="$DIR/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --anonymous-auth=true \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$DIR/sa.pub" \
        --service-account-signing-key-file="$DIR/sa.key" \
        --service-cluster-ip-range=10.0.0.0/24 \
        --endpoint-reconciler-type=none \
        --allow-privileged=true \
        --profiling=false \
        --logtostderr=true --v=1
    wait_for kube-apiserver "$DIR/kube-apiserver.log" "the serving certificate" \
        test -s "$DIR/certs/apiserver.crt"
    # apiserver.crt = leaf followed by the self-signed CA; keep the CA alone
    wait_for kube-apiserver "$DIR/kube-apiserver.log" "the CA in apiserver.crt" \
        sh -c "awk '/BEGIN CERTIFICATE/ { n++ } n == 2' '$DIR/certs/apiserver.crt' | grep -q 'END CERTIFICATE'"
    awk '/BEGIN CERTIFICATE/ { n++ } n == 2' "$DIR/certs/apiserver.crt" > "$DIR/ca.crt"
    wait_for kube-apiserver "$DIR/kube-apiserver.log" "$APISERVER/readyz" \
        sh -c "curl -fsS --max-time 3 --cacert '$DIR/ca.crt' -H 'Authorization: Bearer $ADMIN_TOKEN' '$APISERVER/readyz' | grep -qx ok"

    write_kubeconfig "$DIR/admin.kubeconfig" admin "$ADMIN_TOKEN"
    write_kubeconfig "$DIR/limited.kubeconfig" limited "$LIMITED_TOKEN"

    launch kube-controller-manager "$CACHE/kube-controller-manager" \
        --kubeconfig="$DIR/admin.kubeconfig" \
        --port=0 --secure-port=0 \
        --controllers="$CONTROLLERS" \
        --service-account-private-key-file="$DIR/sa.key" \
        --root-ca-file="$DIR/ca.crt" \
        --use-service-account-credentials=false \
        --leader-elect=false \
        --profiling=false \
        --logtostderr=true --v=1
    # the "default" service account, with its token secret (needed before
    # the ServiceAccount admission plugin accepts pods)
    wait_for kube-controller-manager "$DIR/kube-controller-manager.log" \
        "serviceaccount default/default with a token secret" \
        sh -c "curl -fsS --max-time 3 --cacert '$DIR/ca.crt' -H 'Authorization: Bearer $ADMIN_TOKEN' \
            '$APISERVER/api/v1/namespaces/default/serviceaccounts/default' | grep -q '\"secrets\"'"

    {
        echo "KUBECONFIG=$DIR/admin.kubeconfig"
        echo "KUBE_APISERVER=$APISERVER"
        echo "KUBE_TOKEN=$ADMIN_TOKEN"
        echo "KUBE_CA=$DIR/ca.crt"
        echo "KUBE_LIMITED_TOKEN=$LIMITED_TOKEN"
        echo "KUBE_LIMITED_KUBECONFIG=$DIR/limited.kubeconfig"
        echo "KUBECTL=$CACHE/kubectl"
        echo "ETCD_ENDPOINT=$ETCD"
    } > "$DIR/env"
    chmod 600 "$DIR/env"
    log "cluster up in $(( SECONDS - t0 ))s: $APISERVER (state in $DIR)"
    echo "$DIR/env"
}

cmd_stop() {
    local dir=${1:?usage: $0 stop DIR}
    [ -f "$dir/pids" ] || { log "nothing recorded in $dir/pids"; return 0; }
    local entries=() line
    while read -r line; do [ -n "$line" ] && entries=("$line" "${entries[@]}"); done < "$dir/pids"
    local e name pid
    for e in "${entries[@]}"; do
        name=${e%% *}; pid=${e##* }
        if pid_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$(( SECONDS + 20 ))
            while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
            if pid_alive "$pid"; then
                log "$name ($pid) ignored SIGTERM; killing"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.2
            fi
        fi
        # reap if it is our child (start's failure path)
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$dir/pids"
    log "stopped ($dir left in place)"
}

cmd_status() {
    local dir=${1:?usage: $0 status DIR} name pid rc=0
    [ -f "$dir/pids" ] || { echo "not running"; return 1; }
    while read -r name pid; do
        if pid_alive "$pid"; then echo "$name $pid running"; else echo "$name $pid dead"; rc=1; fi
    done < "$dir/pids"
    return $rc
}

case "${1:-}" in
    build) cmd_build ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
