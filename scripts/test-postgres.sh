#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite's PostgreSQL pass.
#
#   scripts/test-postgres.sh start DIR   # prints the server's URL
#   scripts/test-postgres.sh stop DIR    # stops it and removes DIR
#
# DIR must not exist yet (or be empty). The cluster lives there: made by
# Debian's initdb with trust authentication, listening on 127.0.0.1 only,
# on a free port, with its unix socket in DIR too (never /var/run/postgresql),
# and without fsync (the data is thrown away anyway). Its URL names the
# superuser `postgres` and the database `postgres`; the tests create a
# database of their own for each berth they start (tests/common/mod.rs).
#
# initdb and postgres refuse to run as root: as root, the server runs as
# the `postgres` system user that Debian's package creates.
#
# scripts/test.sh sources nothing from here; it runs `start`, sets a trap
# that runs `stop`, and exports the URL as BERTH_TEST_POSTGRES.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

bindir() {
    local v
    # The newest installed server.
    v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
    if [ -z "$v" ] || [ ! -x "/usr/lib/postgresql/$v/bin/initdb" ]; then
        echo "test-postgres: no PostgreSQL server under /usr/lib/postgresql (scripts/install-test-deps.sh installs it)" >&2
        exit 1
    fi
    echo "/usr/lib/postgresql/$v/bin"
}

# Runs a command as the user the cluster belongs to.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid postgres --regid postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Connections berth processes may hold at once, plus room for psql. The
# test binaries run one after another; inside one, tests run in parallel
# on RUST_TEST_THREADS threads (default: one a core). A test runs at most a
# few berth processes at once (three replicas sharing a database, and a
# management command beside them), each with a pool of up to 8
# connections: 4 x 8 a thread, with a floor of 100.
max_connections() {
    local threads=${RUST_TEST_THREADS:-$(nproc)}
    local n=$((threads * 4 * 8 + 20))
    [ "$n" -ge 100 ] || n=100
    echo "$n"
}

start() {
    local bin port
    bin=$(bindir)
    mkdir -p "$dir"
    if [ -n "$(ls -A "$dir")" ]; then
        echo "test-postgres: $dir is not empty" >&2
        exit 1
    fi
    # The owner must reach DIR to write into it (a temp dir of root's is
    # 0700 only for root).
    chmod 0755 "$dir"
    mkdir "$dir/data" "$dir/socket"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir/data" "$dir/socket"
    fi
    as_owner "$bin/initdb" --pgdata "$dir/data" --username postgres \
        --auth trust --encoding UTF8 --locale C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    # A free port can be taken by someone else between the look and the
    # start: try again on another.
    local tries=0
    while :; do
        port=$(free_port)
        if as_owner "$bin/pg_ctl" --pgdata "$dir/data" --log "$dir/data/server.log" \
            --wait --timeout 60 --silent \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir/socket -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=$(max_connections)" \
            start >/dev/null; then
            break
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 3 ]; then
            echo "test-postgres: the server did not start:" >&2
            cat "$dir/data/server.log" >&2 || true
            exit 1
        fi
    done
    echo "$port" >"$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
    local bin
    [ -d "$dir" ] || return 0
    bin=$(bindir)
    if [ -f "$dir/data/postmaster.pid" ]; then
        # fast: roll back open transactions and disconnect everyone.
        as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode fast --wait --silent stop ||
            as_owner "$bin/pg_ctl" --pgdata "$dir/data" --mode immediate --wait --silent stop || true
    fi
    rm -rf "$dir"
}

case "$action" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
