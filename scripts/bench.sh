#!/usr/bin/env bash
# HTTP benchmark of the control plane with wrk: GET /api/v0/sessions/{id} and
# POST /api/v0/sessions/{id}/messages at 64 connections, against a release
# build on a fresh database.
#
#   scripts/bench.sh [sqlite|postgres|mysql] [duration, default 10s]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
backend="${1:-sqlite}"
duration="${2:-10s}"
connections=64
threads=2
port=$((20000 + RANDOM % 20000))
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || apt_install wrk
cargo build --release --locked -p raworc >/dev/null

case "$backend" in
    sqlite) url="sqlite://$work/raworc.db" ;;
    postgres) url="${RAWORC_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}/raworc_bench_$$" ;;
    mysql) url="${RAWORC_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306}/raworc_bench_$$" ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
esac

RUST_LOG=warn target/release/raworc serve --bind "127.0.0.1:$port" --data-dir "$work/data" \
    --database-url "$url" --admin-password bench-password >"$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 200); do curl -fs "$base/health" >/dev/null && break; sleep 0.1; done

token=$(curl -fs -X POST "$base/api/v0/operators/admin/login" -H 'content-type: application/json' \
    -d '{"pass":"bench-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
session=$(curl -fs -X POST "$base/api/v0/sessions" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
export RAWORC_BENCH_TOKEN="$token"

echo "# backend=$backend connections=$connections threads=$threads duration=$duration"
echo "## GET /api/v0/sessions/{id}"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -s benches/get.lua "$base/api/v0/sessions/$session"
echo "## POST /api/v0/sessions/{id}/messages"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -s benches/post_message.lua "$base/api/v0/sessions/$session/messages"
count=$(curl -fs "$base/api/v0/sessions/$session/messages/count" -H "authorization: Bearer $token")
echo "## messages stored: $count"

kill "$server"; wait "$server" 2>/dev/null || true
case "$backend" in
    postgres) psql "${url%/*}/postgres" -qc "DROP DATABASE IF EXISTS raworc_bench_$$" >/dev/null 2>&1 || true ;;
    mysql) mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS raworc_bench_$$" >/dev/null 2>&1 || true ;;
esac
