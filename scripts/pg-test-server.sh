#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the store's tests: initdb in a temporary folder, started
# with pg_ctl on a loopback port (and a socket in that folder), trust authentication, no data
# kept; TLS on, with a certificate from a test CA (CXR_TRIAGE_TEST_PG_CA). Needs Debian's
# postgresql package (server 15: /usr/lib/postgresql/15/bin) and openssl.
#
#   eval "$(scripts/pg-test-server.sh start)"   # sets CXR_TRIAGE_TEST_PG and CXR_TRIAGE_TEST_PG_DIR
#   cargo test --release --test audit_postgres
#   scripts/pg-test-server.sh stop "$CXR_TRIAGE_TEST_PG_DIR"
#
# `pause DIR [fast|immediate]` stops the server (immediate: as a crash would) and keeps its data; `resume DIR` starts it again on the same port
# (the fault tests stop a server under load). CXR_TRIAGE_TEST_PG_PORT picks the port (54329).
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

start_server() {
    local dir="$1" port
    port=$(cat "$dir/port")
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200 \
            -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

case "${1:-}" in
start)
    port="${CXR_TRIAGE_TEST_PG_PORT:-54329}"
    dir=$(mktemp -d /tmp/cxr-triage-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    # TLS: a test CA and a server certificate it signed for the name "localhost" only (so that
    # sslmode=verify-full passes for localhost and fails for 127.0.0.1).
    tls="$dir/tls"
    mkdir "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -subj /CN=cxr-triage-test-ca -keyout ca.key -out ca.crt
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=localhost -keyout server.key -out server.csr
        printf '%s\n' "subjectAltName=DNS:localhost" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
            -extfile server.ext -out server.crt
        chmod 600 server.key ca.key
    ) >"$dir/tls.log" 2>&1 || { cat "$dir/tls.log" >&2; exit 1; }
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$tls"; fi
    start_server "$dir"
    echo "export CXR_TRIAGE_TEST_PG=postgres://postgres@127.0.0.1:$port"
    echo "export CXR_TRIAGE_TEST_PG_DIR=$dir"
    echo "export CXR_TRIAGE_TEST_PG_CA=$tls/ca.crt"
    ;;
stop)
    dir="${2:?the folder start printed}"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
pause)
    dir="${2:?the folder start printed}"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m "${3:-fast}" -w stop >/dev/null
    ;;
resume)
    start_server "${2:?the folder start printed}"
    ;;
*)
    echo "usage: $0 start | stop DIR | pause DIR | resume DIR" >&2
    exit 2
    ;;
esac
