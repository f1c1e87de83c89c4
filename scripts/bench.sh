#!/usr/bin/env bash
# Measures the hub with the black-box load generator: builds both binaries (release), starts
# a fresh hub on a scratch database, runs one loadtest scenario against it, stops the hub
# (SIGTERM) and drops the database. Prints loadtest's JSON line; its summary goes to stderr.
#   scripts/bench.sh ingest-batch --batch 1000 --connections 4 --duration 15s
#   scripts/bench.sh ingest-single --connections 64 --duration 15s
#   scripts/bench.sh alert --duration 15s --rate 20
# Hub settings can be changed through the environment (e.g. SHADOWER__WRITER__CONCURRENCY=3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/services.sh
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
cargo build --release -q -p shadower-hub -p loadtest
target=${CARGO_TARGET_DIR:-target}/release

db="shadower_bench_$$"
export SHADOWER__DATABASE__URL="${SHADOWER__DATABASE__URL%/*}/$db"
export SHADOWER__AUTH__JWT_SECRET=${SHADOWER__AUTH__JWT_SECRET:-bench-secret-bench-secret-bench-secret-01}
export SHADOWER__NOTIFICATIONS__SECRET_KEY=${SHADOWER__NOTIFICATIONS__SECRET_KEY:-YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMDE=}
export SHADOWER__SERVER__PORT=${SHADOWER__SERVER__PORT:-18181}
export SHADOWER__LOG__LEVEL=${SHADOWER__LOG__LEVEL:-warn}
# The `alert` scenario's webhook receiver listens on 127.0.0.1, a private target.
export SHADOWER__NOTIFICATIONS__ALLOW_PRIVATE_TARGETS=${SHADOWER__NOTIFICATIONS__ALLOW_PRIVATE_TARGETS:-true}
# The load is one workspace's: raise its rate limits far above what is measured.
export SHADOWER__RATE_LIMIT__INGEST_EVENTS_PER_SEC=${SHADOWER__RATE_LIMIT__INGEST_EVENTS_PER_SEC:-1000000000}
export SHADOWER__RATE_LIMIT__INGEST_BURST=${SHADOWER__RATE_LIMIT__INGEST_BURST:-1000000000}
export SHADOWER__RATE_LIMIT__READ_REQUESTS_PER_SEC=${SHADOWER__RATE_LIMIT__READ_REQUESTS_PER_SEC:-1000000000}
export SHADOWER__RATE_LIMIT__READ_BURST=${SHADOWER__RATE_LIMIT__READ_BURST:-1000000000}

"$target/shadower-hub" serve &
hub=$!
cleanup() {
    kill -TERM "$hub" 2>/dev/null && wait "$hub" || true
    psql "${SHADOWER__DATABASE__URL%/*}/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$SHADOWER__SERVER__PORT/health/live" >/dev/null && break
    sleep 0.1
done
"$target/loadtest" "$@" --url "http://127.0.0.1:$SHADOWER__SERVER__PORT" \
    --secret "$SHADOWER__AUTH__JWT_SECRET" --hub-pid "$hub"
