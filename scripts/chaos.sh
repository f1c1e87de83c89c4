#!/usr/bin/env bash
# The fault suite, longer than in CI: each fault lasts CHAOS_SECONDS (default 5) under
# sustained load, then every acknowledged event must be stored exactly once. Prints one
# table row per fault (the lines the tests print as `chaos: …`).
#   scripts/chaos.sh                 # every fault, 5 s each
#   CHAOS_SECONDS=30 scripts/chaos.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/services.sh
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CHAOS_SECONDS=${CHAOS_SECONDS:-5}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo nextest run --test api --no-capture --test-threads 1 \
    -E 'test(/^chaos::/) | test(every_acknowledged_event_survives_sigkill_exactly_once)' \
    2>&1 | tee "$log" >/dev/null || status=$?

echo "fault suite, CHAOS_SECONDS=$CHAOS_SECONDS, $(date -u +%F), commit $(git rev-parse --short HEAD)"
grep '^chaos: ' "$log" | sed 's/^chaos: //'
grep -E '^\s+(FAIL|Summary)' "$log" || true
exit $status
