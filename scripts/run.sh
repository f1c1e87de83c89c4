#!/usr/bin/env bash
# Run Shadower Hub (release build) against the PostgreSQL and Redis found or started by
# scripts/services.sh. Extra arguments go to `shadower-hub serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

configured_db=${SHADOWER__DATABASE__URL:-}
source scripts/services.sh
# services.sh hands back a server-level URL; unless one was configured, the hub keeps its data
# in its own database there (created at start when missing).
if [[ -z $configured_db ]]; then
    export SHADOWER__DATABASE__URL="${SHADOWER__DATABASE__URL%/*}/shadower"
fi

if [[ -z ${SHADOWER__AUTH__JWT_SECRET:-} ]]; then
    export SHADOWER__AUTH__JWT_SECRET=shadower-hub-insecure-development-jwt-secret-do-not-use
    echo "run.sh: WARNING: SHADOWER__AUTH__JWT_SECRET is not set; using a development secret." \
        "Never use it in production." >&2
fi

if [[ -z ${SHADOWER__NOTIFICATIONS__SECRET_KEY:-} ]]; then
    # A fixed development key, so sealed webhook secrets survive restarts of the dev hub.
    export SHADOWER__NOTIFICATIONS__SECRET_KEY=ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=
    echo "run.sh: WARNING: SHADOWER__NOTIFICATIONS__SECRET_KEY is not set; using a development key." \
        "Never use it in production." >&2
fi

exec cargo run --release --bin shadower-hub -- serve "$@"
