#!/usr/bin/env bash
# Start a local PostgreSQL server for qanat's tests and print its DSN (the only stdout line).
#
# Idempotent and quick when everything is already in place. Run as root on Debian/Ubuntu:
#   installs the `postgresql` package if no server binary is found, creates and starts the
#   cluster `<version>/main`, and creates the role `qanat` (password `qanat`) and the
#   database `qanat_test` it owns.
#
#   export QANAT_TEST_POSTGRES_DSN="$(scripts/postgres-local.sh)"
set -euo pipefail

ROLE=qanat
PASSWORD=qanat
DATABASE=qanat_test
PORT=5432
DSN="postgresql://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DATABASE}"

log() { printf 'postgres-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs and starts the system PostgreSQL)"

server_version() {
    # The newest installed major version that has a server binary.
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V -r); do
        basename "$(dirname "$(dirname "$dir")")"
        return 0
    done
    return 1
}

as_postgres() {
    if command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

psql_postgres() {
    as_postgres psql --no-psqlrc -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"
}

if ! VERSION=$(server_version); then
    log "no PostgreSQL server found: installing the postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    VERSION=$(server_version) || die "postgresql installed but no server binary found"
fi
log "PostgreSQL ${VERSION}"

if ! pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
    log "creating cluster ${VERSION}/main on port ${PORT}"
    pg_createcluster "$VERSION" main --port "$PORT" >&2
fi

status=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}')
if [[ $status != online* ]]; then
    log "starting cluster ${VERSION}/main"
    pg_ctlcluster "$VERSION" main start >&2
fi

for _ in $(seq 1 60); do
    if as_postgres pg_isready -q -h 127.0.0.1 -p "$PORT"; then
        break
    fi
    sleep 0.5
done
as_postgres pg_isready -q -h 127.0.0.1 -p "$PORT" || die "server on port ${PORT} does not answer"

if [[ $(psql_postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '${ROLE}'") != 1 ]]; then
    log "creating role ${ROLE}"
    psql_postgres -c "CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}'" >&2
fi

if [[ $(psql_postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${DATABASE}'") != 1 ]]; then
    log "creating database ${DATABASE}"
    psql_postgres -c "CREATE DATABASE ${DATABASE} OWNER ${ROLE}" >&2
fi

log "ready"
echo "$DSN"
