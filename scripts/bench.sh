#!/usr/bin/env bash
# Measures the hub with the black-box load generator, against release binaries it builds.
#
#   scripts/bench.sh            the whole suite: every scenario of the README's performance
#                               table, each against a fresh hub on a scratch database, each
#                               followed by its ceiling (`loadtest ceiling …`, no hub); then
#                               rewrites the table between the bench markers of README.md.
#   scripts/bench.sh ingest-batch --batch 1000 --connections 4 --duration 15s
#                               one scenario against a fresh hub; prints loadtest's JSON line
#                               (its summary goes to stderr)
#   scripts/bench.sh ceiling ingest-batch --batch 1000 --connections 4 --duration 15s
#                               one ceiling (ingest ceilings get --pg-url of the hub's server)
#   scripts/bench.sh noisy --sessions 1000 --rate 100 --duration 15s --rounds 3
#                               tenant Y's fan-out load and reads alone, then beside tenant X
#                               posting hostile bodies at its rate limit (see `noisy` below)
#   scripts/bench.sh --table .local/bench/<time>
#                               rewrites README.md's table from a suite's results again
#
# The suite keeps every run's JSON line and summary under .local/bench/<UTC time>/. Hub settings
# can be changed through the environment (e.g. SHADOWER__WRITER__CONCURRENCY=3); the table
# lists the settings the runs used. HUB_BIN=<path> runs another build of the hub (A/B runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Services, release binaries and the hub's settings.
setup() {
    source scripts/services.sh
    export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
    cargo build --release -q -p shadower-hub -p loadtest
    target=${CARGO_TARGET_DIR:-target}/release
    # The server-level URL (…/postgres): each hub gets its own scratch database on that server,
    # and the ingest ceilings create theirs there too.
    pg_server=$SHADOWER__DATABASE__URL
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
    hub_url=http://127.0.0.1:$SHADOWER__SERVER__PORT
}

hub= db=
stop_hub() {
    if [[ -n $hub ]]; then
        kill -TERM "$hub" 2>/dev/null && wait "$hub" || true
        hub=
    fi
    if [[ -n $db ]]; then
        psql "$pg_server" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
        db=
    fi
}
trap stop_hub EXIT

# Starts a release hub on a fresh database, as `shadower-hub serve` (the hub creates it).
start_hub() {
    db=shadower_bench_$$_$RANDOM
    SHADOWER__DATABASE__URL="${pg_server%/*}/$db" "${HUB_BIN:-$target/shadower-hub}" serve &
    hub=$!
    for _ in $(seq 100); do
        curl -sf "$hub_url/health/live" >/dev/null && return
        sleep 0.1
    done
    echo "bench: the hub did not come up on $hub_url" >&2
    return 1
}

# One scenario against a fresh hub, or one ceiling (`ceiling …`, no hub).
run() {
    if [[ $1 == ceiling ]]; then
        case $2 in
        ingest-*) "$target/loadtest" "$@" --pg-url "$pg_server" ;;
        *) "$target/loadtest" "$@" ;;
        esac
    else
        start_hub || return
        local rc=0
        "$target/loadtest" "$@" --url "$hub_url" --secret "$SHADOWER__AUTH__JWT_SECRET" \
            --hub-pid "$hub" || rc=$?
        stop_hub
        return $rc
    fi
}

# step NAME ARGS…: runs one scenario or ceiling; its JSON line goes to $out/NAME.json (empty
# when the run failed), its stderr to $out/NAME.log.
step() {
    local name=$1
    shift
    echo "bench: $name: loadtest $*" >&2
    printf '%s\n' "$*" >"$out/$name.args"
    if run "$@" >"$out/$name.out" 2>"$out/$name.log"; then
        tail -n 1 "$out/$name.out" >"$out/$name.json"
        cat "$out/$name.json"
    else
        : >"$out/$name.json"
        echo "bench: $name failed: $(tail -n 1 "$out/$name.log")" >&2
    fi
}

# field NAME KEY: the value of KEY in NAME's JSON line ("" when missing, null or failed).
field() { jq -r --arg k "$2" '.[$k] // empty' "$out/$1.json"; }
# The average frame size a fan-out run measured (for its ceiling), 1000 when it has none.
frames_of() {
    local b
    b=$(field "$1" frame_bytes)
    echo "${b:-1000}"
}

# The suite: every scenario with the README's parameters, each followed by its ceiling.
suite() {
    out=.local/bench/$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$out"
    echo "bench: results in $out" >&2
    local commit pg_version cpu_model settings
    commit=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- . ':!README.md' || commit="$commit with uncommitted changes"
    pg_version=$(psql "$pg_server" -Atc 'show server_version' 2>/dev/null || echo '?')
    cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    settings=$(env | grep '^SHADOWER__' | grep -v -e SECRET -e '_URL=' -e PORT -e LOG__ | sort |
        sed 's/^SHADOWER__//' | paste -sd ' ' -)
    echo "Run of $(date -u '+%Y-%m-%d %H:%M') UTC by \`scripts/bench.sh\`, commit $commit, on" \
        "$(nproc) cores ($cpu_model), $(free -g | awk '/^Mem:/ { print $2 }') GiB, PostgreSQL" \
        "$pg_version; the hub, PostgreSQL, Redis and the load generator share the machine. One" \
        "run per row; each scenario ran against a fresh release hub on its own database, with" \
        "these settings changed from the defaults: \`$settings\`. Each ceiling ran right after" \
        "its scenario, without a hub." >"$out/machine"

    step ingest-batch ingest-batch --batch 1000 --connections 4 --duration 15s
    step ceiling-ingest-batch ceiling ingest-batch --batch 1000 --connections 4 --duration 15s
    step ingest-single ingest-single --connections 64 --duration 15s
    step ceiling-ingest-single ceiling ingest-single --connections 64 --duration 15s
    step query query --connections 32 --duration 15s
    step fanout-light fanout --sessions 100 --rate 1 --duration 60s
    step ceiling-fanout-light ceiling fanout --sessions 100 --rate 1 --duration 60s \
        --frame-bytes "$(frames_of fanout-light)"
    step fanout fanout --sessions 1000 --rate 1000 --duration 20s
    step ceiling-fanout ceiling fanout --sessions 1000 --rate 1000 --duration 20s \
        --frame-bytes "$(frames_of fanout)"
    step fanout-idle fanout --sessions 10000 --rate 0 --duration 10s
    step ceiling-fanout-idle ceiling fanout --sessions 10000 --rate 0 --duration 10s \
        --frame-bytes "$(frames_of fanout)"
    step alert alert --duration 15s --rate 20
}

# ---------------------------------------------------------------------------------------------
# The table: README.md between <!-- bench:start --> and <!-- bench:end -->, from $out.

# Integers with a space between thousands: 106700 -> 106 700.
group() { sed -E ':a;s/([0-9])([0-9]{3})($|[^0-9])/\1 \2\3/;ta' <<<"$1"; }
# num NAME KEY [DECIMALS]: the field rounded (0 decimals: grouped), "?" when missing.
num() {
    local v
    v=$(jq -r --arg k "$2" --argjson d "${3:-0}" \
        '.[$k] // empty | . * pow(10; $d) | round / pow(10; $d)' "$out/$1.json")
    if [[ -z $v ]]; then echo "?"; elif [[ ${3:-0} == 0 ]]; then group "$v"; else echo "$v"; fi
}
# pct A B: A as a whole percentage of B ("?" when either is missing or B is 0).
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "?"; else printf "%.0f", 100 * a / b }'; }
# verdict VALUE OP LIMIT: "met" or "**missed**" (awk comparison), "not measured" without a value.
verdict() {
    if [[ -z $1 || $1 == "?" ]]; then
        echo "not measured"
    elif awk -v v="$1" -v l="$3" "BEGIN { exit !(v $2 l) }"; then
        echo "met"
    else
        echo "**missed**"
    fi
}
# ok NAME: the run finished with its JSON line; failed NAME: the cell of one that did not.
ok() { [[ -s $out/$1.json ]]; }
failed() { echo "run failed: $(tail -n 1 "$out/$1.log" | sed 's/|/\\|/g')"; }
cmd() { echo "\`scripts/bench.sh $(<"$out/$1.args")\`"; }
cpu() { echo "CPU (% of one core): hub $(num "$1" hub_cpu_pct), loadtest $(num "$1" client_cpu_pct)"; }

row_ingest_batch() {
    local n=ingest-batch c=ceiling-ingest-batch eps ceil share
    ok $n || { echo "| durable ingest, batches of 1 000 | $(cmd $n) | $(failed $n) | |"; return; }
    eps=$(field $n events_per_s) ceil=$(field $c events_per_s)
    share=$(pct "$eps" "$ceil")
    echo "| durable ingest, batches of 1 000 | $(cmd $n) | **$(num $n events_per_s) events/s** acknowledged, p50 $(num $n p50_ms 1) ms, p99 $(num $n p99_ms 1) ms per batch, lost $(num $n lost), errors $(num $n errors); $(cpu $n). Bare insert ceiling ($(cmd $c), synchronous_commit=$(field $c synchronous_commit)): $(num $c events_per_s) rows/s, lost $(num $c lost): **hub = $share %** | ≥ 100 k events/s: $(verdict "$eps" ">=" 100000); ≥ 70 % of the ceiling: $(verdict "$share" ">=" 70); lost 0: $(verdict "$(field $n lost)" "==" 0) |"
}

row_ingest_single() {
    local n=ingest-single c=ceiling-ingest-single rps p99
    ok $n || { echo "| one event per request, 64 clients | $(cmd $n) | $(failed $n) | |"; return; }
    rps=$(field $n requests_per_s) p99=$(field $n p99_ms)
    echo "| one event per request, 64 clients | $(cmd $n) | **$(num $n requests_per_s) requests/s**, p50 $(num $n p50_ms 1) ms, p99 $(num $n p99_ms 1) ms, p99.9 $(num $n p999_ms 1) ms, lost $(num $n lost), errors $(num $n errors); $(cpu $n). One row per commit from 64 connections straight into PostgreSQL ($(cmd $c)): $(num $c events_per_s) rows/s, p99 $(num $c p99_ms 1) ms: hub = $(pct "$(field $n events_per_s)" "$(field $c events_per_s)") % (the hub merges single events into fewer commits, so it can pass this) | ≥ 20 k requests/s: $(verdict "$rps" ">=" 20000); p99 ≤ 20 ms: $(verdict "$p99" "<=" 20); lost 0: $(verdict "$(field $n lost)" "==" 0) |"
}

row_query() {
    local n=query rps p99
    ok $n || { echo "| realtime reads, 32 clients | $(cmd $n) | $(failed $n) | |"; return; }
    rps=$(field $n requests_per_s) p99=$(field $n p99_ms)
    echo "| realtime reads, 32 clients | $(cmd $n) | **$(num $n requests_per_s) requests/s**, p50 $(num $n p50_ms 2) ms, p99 $(num $n p99_ms 2) ms, errors $(num $n errors); $(cpu $n) | ≥ 30 k requests/s: $(verdict "$rps" ">=" 30000); p99 ≤ 5 ms: $(verdict "$p99" "<=" 5) |"
}

row_fanout_light() {
    local n=fanout-light c=ceiling-fanout-light
    ok $n || { echo "| WebSocket, light load: 100 sessions, 1 event/s | $(cmd $n) | $(failed $n) | |"; return; }
    echo "| WebSocket, light load: 100 sessions, 1 event/s | $(cmd $n) | post → frame p50 $(num $n p50_ms 1) ms, **p99 $(num $n p99_ms 1) ms**, lost $(num $n lost), errors $(num $n errors). Bare broadcast server, same load and frame size ($(cmd $c)): p50 $(num $c p50_ms 1) ms, p99 $(num $c p99_ms 1) ms, lost $(num $c lost) | p99 ≤ 5 ms: $(verdict "$(field $n p99_ms)" "<=" 5) |"
}

row_fanout() {
    local n=fanout c=ceiling-fanout p99 errors
    ok $n || { echo "| WebSocket, 1 000 sessions × 1 000 events/s | $(cmd $n) | $(failed $n) | |"; return; }
    p99=$(field $n p99_ms) errors=$(field $n errors)
    echo "| WebSocket, 1 000 sessions × 1 000 events/s | $(cmd $n) | $(num $n requests_per_s) frame deliveries/s, post → frame p50 $(num $n p50_ms 1) ms, **p99 $(num $n p99_ms 1) ms**, frame built → received p99 $(num $n transit_p99_ms 1) ms, lost $(num $n lost), errors (sessions failed or closed) $(num $n errors); frames average $(num $n frame_bytes) B; hub RSS $(num $n hub_rss_mb 1) MiB; $(cpu $n). Bare broadcast server, same sessions, rate and frame size ($(cmd $c)): $(num $c requests_per_s) deliveries/s, post → frame p50 $(num $c p50_ms 1) ms, p99 $(num $c p99_ms 1) ms, built → received p99 $(num $c transit_p99_ms 1) ms, lost $(num $c lost), errors $(num $c errors): **hub p99 = $(pct "$p99" "$(field $c p99_ms)") % of the bare p99**, deliveries $(pct "$(field $n requests_per_s)" "$(field $c requests_per_s)") % | p99 ≤ 100 ms coalescing + 20 ms: $(verdict "$p99" "<=" 120); no session dropped: $(verdict "$errors" "==" 0) |"
}

row_fanout_idle() {
    local n=fanout-idle c=ceiling-fanout-idle
    ok $n || { echo "| WebSocket, 10 000 idle sessions | $(cmd $n) | $(failed $n) | |"; return; }
    echo "| WebSocket, 10 000 idle sessions | $(cmd $n) | connected in $(num $n connect_s 2) s, errors $(num $n errors); hub RSS +$(num $n rss_per_session_kib 1) KiB per idle session. Bare broadcast server ($(cmd $c)): connected in $(num $c connect_s 2) s, +$(num $c rss_per_session_kib 1) KiB per session | ≤ 30 KiB per session: $(verdict "$(field $n rss_per_session_kib)" "<=" 30) |"
}

row_alert() {
    local n=alert p99
    ok $n || { echo "| alert: event → signed webhook, 20 firings/s | $(cmd $n) | $(failed $n) | |"; return; }
    p99=$(field $n p99_ms)
    echo "| alert: event → signed webhook, 20 firings/s | $(cmd $n) | slot due → webhook received p50 $(num $n p50_ms 1) ms, **p99 $(num $n p99_ms 1) ms**, p99.9 $(num $n p999_ms 1) ms, lost $(num $n lost), errors (failed posts, bad signatures) $(num $n errors); $(cpu $n) | p99 ≤ 100 ms: $(verdict "$p99" "<=" 100) |"
}

table() {
    local block=$out/README-block.md f
    {
        cat "$out/machine"
        echo
        echo "| what | command | result | target |"
        echo "|---|---|---|---|"
        row_ingest_batch
        row_ingest_single
        row_query
        row_fanout_light
        row_fanout
        row_fanout_idle
        row_alert
        echo
        echo "<details><summary>The runs' JSON lines</summary>"
        echo
        echo '```'
        for f in ingest-batch ceiling-ingest-batch ingest-single ceiling-ingest-single query \
            fanout-light ceiling-fanout-light fanout ceiling-fanout fanout-idle \
            ceiling-fanout-idle alert; do
            if ok "$f"; then cat "$out/$f.json"; else echo "$f: failed"; fi
        done
        echo '```'
        echo
        echo "</details>"
    } >"$block"
    awk -v block="$block" '
        /<!-- bench:end -->/ { skip = 0 }
        !skip { print }
        /<!-- bench:start -->/ { while ((getline line < block) > 0) print line; skip = 1 }
    ' README.md >"$out/README.md"
    mv "$out/README.md" README.md
    echo "bench: README.md's performance table rewritten from $out" >&2
}

# noisy ARGS…: `loadtest noisy-neighbour ARGS…` against one hub: tenant Y's fan-out load and
# realtime reads, alone and then beside tenant X posting hostile and valid bodies back to back.
# The hub keeps its default ingest rate limit (20 000 events/s, burst 40 000), so X is held at
# its limit as a real tenant would be; reads stay raised for Y's sessions.
noisy() {
    SHADOWER__RATE_LIMIT__INGEST_EVENTS_PER_SEC=20000 SHADOWER__RATE_LIMIT__INGEST_BURST=40000 \
        start_hub || return
    local rc=0
    "$target/loadtest" noisy-neighbour "$@" --url "$hub_url" \
        --secret "$SHADOWER__AUTH__JWT_SECRET" --hub-pid "$hub" || rc=$?
    stop_hub
    return $rc
}

# analytics [--runs N] [--agents N] [--days N] [loadtest analytics options…]: one hub on a fresh
# database, seeded (`loadtest seed`: COPY, then the rollups folded), then `loadtest analytics`
# (the HTTP ceiling, uncached and cached 30-day reads). A kept database (ANALYTICS_DB=<name>,
# created and seeded on first use) skips the seeding on later runs.
analytics() {
    local seed_args=() read_args=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --runs | --agents | --users) seed_args+=("$1" "$2"); [[ $1 == --agents ]] && read_args+=("$1" "$2"); shift 2 ;;
        --days) seed_args+=("$1" "$2"); read_args+=("$1" "$2"); shift 2 ;;
        *) read_args+=("$1"); shift ;;
        esac
    done
    # A kept database is never dropped (stop_hub drops only $db).
    local keep=${ANALYTICS_DB:-} fresh=1 name
    if [[ -n $keep ]]; then
        name=$keep
        psql "$pg_server" -Atc "SELECT 1 FROM pg_database WHERE datname = '$keep'" | grep -q 1 && fresh=
    else
        db=shadower_bench_$$_$RANDOM
        name=$db
    fi
    SHADOWER__DATABASE__URL="${pg_server%/*}/$name" "${HUB_BIN:-$target/shadower-hub}" serve &
    hub=$!
    for _ in $(seq 300); do curl -sf "$hub_url/health/live" >/dev/null && break; sleep 0.1; done
    local rc=0
    if [[ -n $fresh ]]; then
        "$target/loadtest" seed --database-url "${pg_server%/*}/$name" "${seed_args[@]}" || rc=$?
    else
        # Whatever an interrupted run left pending is folded before reading.
        "$target/loadtest" seed --database-url "${pg_server%/*}/$name" --fold-only || rc=$?
    fi
    if [[ $rc == 0 ]]; then
        "$target/loadtest" analytics --url "$hub_url" --secret "$SHADOWER__AUTH__JWT_SECRET" \
            "${read_args[@]}" || rc=$?
    fi
    stop_hub
    return $rc
}

case ${1:-} in
analytics)
    shift
    setup
    analytics "$@"
    exit
    ;;
noisy)
    shift
    setup
    noisy "$@"
    exit
    ;;
--table)
    out=${2:?usage: scripts/bench.sh --table .local/bench/<time>}
    [[ -f $out/machine ]] || { echo "bench: $out holds no suite results" >&2; exit 1; }
    ;;
"") ;;
*)
    setup
    run "$@"
    exit
    ;;
esac
command -v jq >/dev/null || { echo "bench: jq is needed to write the table (apt-get install jq)" >&2; exit 1; }
grep -q '<!-- bench:start -->' README.md && grep -q '<!-- bench:end -->' README.md || {
    echo "bench: README.md has no <!-- bench:start --> … <!-- bench:end --> block" >&2
    exit 1
}
if [[ -z ${1:-} ]]; then
    setup
    suite
fi
table
