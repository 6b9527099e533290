#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the store's tests: initdb in a temporary folder, started
# with pg_ctl on a loopback port (and a socket in that folder), trust authentication, no data
# kept. Needs Debian's postgresql package (server 15: /usr/lib/postgresql/15/bin).
#
#   eval "$(scripts/pg-test-server.sh start)"   # sets CXR_TRIAGE_TEST_PG and CXR_TRIAGE_TEST_PG_DIR
#   cargo test --release --test audit_postgres
#   scripts/pg-test-server.sh stop "$CXR_TRIAGE_TEST_PG_DIR"
#
# initdb refuses to run as root: as root the cluster runs as the `postgres` user (the package
# creates it), otherwise as the current user.
set -euo pipefail

bin=""
for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && bin="$dir"
done
if [ -z "$bin" ]; then
    echo "no PostgreSQL server: apt-get install postgresql (Debian 12: server 15)" >&2
    exit 1
fi

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    port="${CXR_TRIAGE_TEST_PG_PORT:-54329}"
    dir=$(mktemp -d /tmp/cxr-triage-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "export CXR_TRIAGE_TEST_PG=postgres://postgres@127.0.0.1:$port"
    echo "export CXR_TRIAGE_TEST_PG_DIR=$dir"
    ;;
stop)
    dir="${2:?the folder start printed}"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
