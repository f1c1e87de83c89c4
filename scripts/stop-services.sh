#!/usr/bin/env bash
# Stop the private PostgreSQL and Redis that scripts/services.sh started under .local/.
# Their data is kept; delete .local/ (and the PostgreSQL directory named in .local/pg.dir,
# if it is outside .local/) to start from scratch. Servers that scripts/services.sh merely
# found (e.g. on 5432/6379) are never touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STATE=$PWD/.local

if [[ -f $STATE/pg.dir ]]; then
    data=$(<"$STATE/pg.dir")/data
    if [[ -f $data/PG_VERSION ]]; then
        # Use the pg_ctl matching the data directory's version, else the one in PATH.
        pg_ctl=/usr/lib/postgresql/$(<"$data/PG_VERSION")/bin/pg_ctl
        [[ -x $pg_ctl ]] || pg_ctl=pg_ctl
        # pg_ctl refuses to run as root: run it as the owner of the data directory.
        as_owner=()
        if ((EUID == 0)); then
            as_owner=(runuser -u "$(stat -c %U "$data")" --)
        fi
        if (cd / && "${as_owner[@]}" "$pg_ctl" status -D "$data" >/dev/null); then
            (cd / && "${as_owner[@]}" "$pg_ctl" stop -D "$data" -m fast -w >/dev/null)
            echo "stop-services: stopped PostgreSQL ($data)" >&2
        fi
    fi
fi

if [[ -f $STATE/redis.port ]]; then
    port=$(<"$STATE/redis.port")
    # Only shut down the server on that port if it is ours (its working dir is .local/redis).
    if [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$port" config get dir 2>/dev/null | tail -n 1) == "$STATE/redis" ]]; then
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null
        echo "stop-services: stopped Redis (port $port)" >&2
    fi
fi
