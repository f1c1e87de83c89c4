#!/usr/bin/env bash
# Locate or start the PostgreSQL and Redis that Shadower Hub needs, and export
#   SHADOWER__DATABASE__URL  postgres://postgres@HOST:PORT/postgres (a superuser:
#                            the tests CREATE DATABASE per test through it)
#   SHADOWER__REDIS__URL     redis://127.0.0.1:PORT
#
# Usage:  source scripts/services.sh          (from bash scripts; safe under set -euo pipefail)
#    or:  eval "$(scripts/services.sh)"       (prints the export lines)
#
# For each service the first that works is used:
#   1. the URL already in the environment, if it answers;
#   2. the standard local server: 127.0.0.1:5432 (user postgres, no password) / 127.0.0.1:6379;
#   3. a private server under .local/ (git-ignored), started here on a free port and reused
#      by later runs. Missing server binaries are installed with apt-get.
# SHADOWER_LOCAL_SERVICES=1 skips 1 and 2 and always uses the private servers.
# scripts/stop-services.sh stops the private servers.
#
# One line per service on stderr says what is used; on failure the script says why.

# When sourced, do the work in a child bash (so errexit applies there whatever the caller's
# shell options are) and import the variables it prints.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _shadower_exports=$(
        SHADOWER__DATABASE__URL=${SHADOWER__DATABASE__URL:-} \
        SHADOWER__REDIS__URL=${SHADOWER__REDIS__URL:-} \
        SHADOWER_LOCAL_SERVICES=${SHADOWER_LOCAL_SERVICES:-} \
        bash "${BASH_SOURCE[0]}"
    ) || return
    eval "$_shadower_exports"
    unset _shadower_exports
    return 0
fi

set -euo pipefail
shopt -s inherit_errexit # keep errexit inside $(...) too

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STATE=$REPO/.local
FORCE_LOCAL=${SHADOWER_LOCAL_SERVICES:-0}
export PGCONNECT_TIMEOUT=5

log() { echo "services: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# fail_with_log MESSAGE LOGFILE: report a failure together with the end of a log file.
fail_with_log() {
    log "ERROR: $1"
    if [[ -f $2 ]]; then
        echo "----- last lines of $2 -----" >&2
        tail -n 20 "$2" >&2
    fi
    exit 1
}

# Hide the password of a URL before printing it.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "root privileges (or sudo) are needed to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null || die "$* is not installed and there is no apt-get; please install it"
    log "installing $* with apt-get (log: $STATE/apt.log)"
    mkdir -p "$STATE"
    { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; } \
        >"$STATE/apt.log" 2>&1 || fail_with_log "apt-get install $* failed" "$STATE/apt.log"
}

# True when something listens on 127.0.0.1:PORT.
port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port PREFERRED FIRST: PREFERRED if given and free, else the first free port from FIRST up.
pick_port() {
    local port=$2
    if [[ -n $1 ]] && ! port_in_use "$1"; then
        echo "$1"
        return
    fi
    while port_in_use "$port"; do
        ((port < 65535)) || die "no free TCP port found"
        port=$((port + 1))
    done
    echo "$port"
}

# pg_query URL SQL: print the single value the query returns (fails if the server does not answer).
pg_query() { command -v psql >/dev/null && psql -X -w -A -t -q -d "$1" -c "$2" 2>/dev/null; }
pg_ok() { [[ $(pg_query "$1" 'select 1') == 1 ]]; }

redis_ok() { command -v redis-cli >/dev/null && [[ $(timeout 5 redis-cli -u "$1" ping 2>/dev/null) == PONG ]]; }

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Directory holding initdb/pg_ctl: from PATH, else the newest /usr/lib/postgresql/*/bin.
find_pg_bin() {
    local initdb dir
    if initdb=$(command -v initdb); then
        dirname "$(readlink -f "$initdb")"
        return
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return
        fi
    done
    return 1
}

# Start (or find running) the private PostgreSQL; print its URL.
private_postgres() {
    local pg_bin pg_base data sockdir port url out
    pg_bin=$(find_pg_bin) || {
        apt_install postgresql
        pg_bin=$(find_pg_bin) || die "initdb not found even after installing postgresql"
    }

    # initdb and pg_ctl refuse to run as root: then the server runs as the postgres user, which
    # needs to reach its data directory. If a parent of the clone is closed to it, use /tmp.
    [[ -d $STATE ]] || mkdir -m 755 "$STATE"
    if ((EUID == 0)); then
        id -u postgres >/dev/null 2>&1 ||
            useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres ||
            die "could not create the postgres system user"
        as_pg() { (cd / && runuser -u postgres -- "$@"); }
        if as_pg test -x "$STATE"; then
            pg_base=$STATE/pg
        else
            pg_base=/tmp/shadower-hub-$(printf %s "$REPO" | cksum | cut -d' ' -f1)
        fi
        mkdir -p "$pg_base"
        chown postgres: "$pg_base"
    else
        as_pg() { "$@"; }
        pg_base=$STATE/pg
        mkdir -p "$pg_base"
    fi
    echo "$pg_base" >"$STATE/pg.dir" # read by scripts/stop-services.sh
    data=$pg_base/data

    # Reuse the instance of an earlier run if it still answers (and really serves our data dir).
    if [[ -f $STATE/pg.port ]]; then
        port=$(<"$STATE/pg.port")
        url=postgres://postgres@127.0.0.1:$port/postgres
        if [[ $(pg_query "$url" 'show data_directory') == "$data" ]]; then
            log "PostgreSQL: reusing private server $url (data: $data)"
            echo "$url"
            return
        fi
    fi

    if [[ ! -f $data/PG_VERSION ]]; then
        as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
            >"$pg_base/initdb.log" 2>&1 || fail_with_log "initdb failed" "$pg_base/initdb.log"
        # Unix socket paths are limited to ~107 bytes; clients use TCP, so a long path disables it.
        sockdir=$pg_base/run
        if ((${#sockdir} > 90)); then
            sockdir=
        else
            as_pg mkdir -p "$sockdir"
        fi
        cat >>"$data/postgresql.conf" <<EOF

# Added by scripts/services.sh (the port is passed by pg_ctl at start)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = 200
fsync = on
EOF
    fi

    port=$(pick_port "$(cat "$STATE/pg.port" 2>/dev/null || true)" 55432)
    url=postgres://postgres@127.0.0.1:$port/postgres
    out=$(as_pg "$pg_bin/pg_ctl" -D "$data" -l "$pg_base/postgres.log" -w -t 60 -o "-p $port" start 2>&1) || {
        log "$out"
        fail_with_log "could not start PostgreSQL in $data (if a stale server runs, try scripts/stop-services.sh)" \
            "$pg_base/postgres.log"
    }
    echo "$port" >"$STATE/pg.port"
    pg_ok "$url" || fail_with_log "PostgreSQL started but $url does not answer" "$pg_base/postgres.log"
    log "PostgreSQL: started private server $url (data: $data)"
    echo "$url"
}

choose_postgres() {
    local url=${SHADOWER__DATABASE__URL:-}
    if [[ $FORCE_LOCAL != 1 ]]; then
        if [[ -n $url ]]; then
            if pg_ok "$url"; then
                log "PostgreSQL: using SHADOWER__DATABASE__URL=$(redact "$url")"
                echo "$url"
                return
            fi
            log "PostgreSQL: SHADOWER__DATABASE__URL=$(redact "$url") does not answer, looking further"
        fi
        url=postgres://postgres@127.0.0.1:5432/postgres
        if pg_ok "$url"; then
            log "PostgreSQL: using the server on 127.0.0.1:5432 ($url)"
            echo "$url"
            return
        fi
    fi
    private_postgres
}

# ---------------------------------------------------------------------------------------------
# Redis

# Start (or find running) the private Redis; print its URL.
private_redis() {
    local dir=$STATE/redis port url i
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server
    fi
    mkdir -p "$dir"

    # Reuse the instance of an earlier run if it still answers (and really is ours).
    if [[ -f $STATE/redis.port ]]; then
        port=$(<"$STATE/redis.port")
        if [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$port" config get dir 2>/dev/null | tail -n 1) == "$dir" ]]; then
            url=redis://127.0.0.1:$port
            log "Redis: reusing private server $url (dir: $dir)"
            echo "$url"
            return
        fi
    fi

    port=$(pick_port "$(cat "$STATE/redis.port" 2>/dev/null || true)" 56379)
    url=redis://127.0.0.1:$port
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null 2>&1 ||
        fail_with_log "could not start redis-server" "$dir/redis.log"
    echo "$port" >"$STATE/redis.port"
    for ((i = 0; i < 50; i++)); do # wait up to 10 s for the daemon to listen
        if redis_ok "$url"; then
            log "Redis: started private server $url (dir: $dir)"
            echo "$url"
            return
        fi
        sleep 0.2
    done
    fail_with_log "redis-server started but $url does not answer" "$dir/redis.log"
}

choose_redis() {
    local url=${SHADOWER__REDIS__URL:-}
    if [[ $FORCE_LOCAL != 1 ]]; then
        if [[ -n $url ]]; then
            if redis_ok "$url"; then
                log "Redis: using SHADOWER__REDIS__URL=$(redact "$url")"
                echo "$url"
                return
            fi
            log "Redis: SHADOWER__REDIS__URL=$(redact "$url") does not answer, looking further"
        fi
        url=redis://127.0.0.1:6379
        if redis_ok "$url"; then
            log "Redis: using the server on 127.0.0.1:6379 ($url)"
            echo "$url"
            return
        fi
    fi
    private_redis
}

# ---------------------------------------------------------------------------------------------

db_url=$(choose_postgres)
redis_url=$(choose_redis)
printf 'export SHADOWER__DATABASE__URL=%q\n' "$db_url"
printf 'export SHADOWER__REDIS__URL=%q\n' "$redis_url"
