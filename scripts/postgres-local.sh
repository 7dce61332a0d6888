#!/usr/bin/env bash
# Start a local PostgreSQL server for qanat's tests and print its DSN (the only stdout line).
#
# Idempotent and quick when everything is already in place. Run as root on Debian/Ubuntu:
#   installs the `postgresql` package if no server binary is found, creates and starts the
#   cluster `<version>/main`, and creates the role `qanat` (password `qanat`) and the
#   database `qanat_test` it owns.
#
#   export QANAT_TEST_POSTGRES_DSN="$(scripts/postgres-local.sh)"
#
# Verbs: `start` (the default, above); `status` exits 0 when the cluster is online and
# answers (then `start` starts nothing); `stop` stops the cluster (pg_ctlcluster stop).
# QANAT_POSTGRES_CLUSTER (default main) and QANAT_POSTGRES_PORT (default 5432) name another
# cluster of the same server, created on that port if missing.
set -euo pipefail

VERB=${1:-start}
ROLE=qanat
PASSWORD=qanat
DATABASE=qanat_test
CLUSTER=${QANAT_POSTGRES_CLUSTER:-main}
PORT=${QANAT_POSTGRES_PORT:-5432}
DSN="postgresql://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DATABASE}"

log() { printf 'postgres-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

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

# The cluster's status column ("online", "down", ...), empty when there is no such cluster.
cluster_status() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $4}'
}

case $VERB in
    start) ;;
    status)
        VERSION=$(server_version) && [[ $(cluster_status) == online* ]] \
            && pg_isready -q -h 127.0.0.1 -p "$PORT" && exit 0
        exit 1
        ;;
    stop)
        [[ $(id -u) -eq 0 ]] || die "run as root (it stops the system PostgreSQL's cluster)"
        if VERSION=$(server_version) && [[ $(cluster_status) == online* ]]; then
            log "stopping cluster ${VERSION}/${CLUSTER}"
            pg_ctlcluster "$VERSION" "$CLUSTER" stop >&2
        fi
        exit 0
        ;;
    *) die "usage: $0 [start|status|stop]" ;;
esac

[[ $(id -u) -eq 0 ]] || die "run as root (it installs and starts the system PostgreSQL)"

if ! VERSION=$(server_version); then
    log "no PostgreSQL server found: installing the postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    VERSION=$(server_version) || die "postgresql installed but no server binary found"
fi
log "PostgreSQL ${VERSION}"

if [[ -z $(cluster_status) ]]; then
    log "creating cluster ${VERSION}/${CLUSTER} on port ${PORT}"
    pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >&2
fi

if [[ $(cluster_status) != online* ]]; then
    log "starting cluster ${VERSION}/${CLUSTER}"
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
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
