#!/usr/bin/env bash
# The project's test command: finds or starts PostgreSQL and Redis (scripts/services.sh), then
# runs the doctests, then every test of the workspace with cargo-nextest.
# Extra arguments go to `cargo nextest run`, e.g.  scripts/test.sh -E 'test(auth)'
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/services.sh

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "test.sh: installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi

# Doctests first (nextest cannot run them). They exist only in library crates, and
# `cargo test --doc` fails when there is none.
if cargo metadata --no-deps --format-version 1 | grep -Eq '"kind":\["(lib|rlib|dylib|proc-macro)"\]'; then
    cargo test --workspace --doc
fi

# Last, so its summary is the closing line CI reads.
cargo nextest run --workspace --all-targets --no-fail-fast "$@"
