#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one: installs what is missing
# (scripts/bootstrap.sh; PostgreSQL from Debian unless a DSN or a Docker engine is there),
# checks lint, format and types, then runs pytest against the real Kafka and PostgreSQL.
# Extra arguments go to pytest, e.g. scripts/test.sh -k http
#
# A server it starts (scripts/*-local.sh, for a service no QANAT_TEST_* variable names) is
# stopped again when it ends, however it ends (success, failure, Ctrl-C); one that already
# answered before keeps running. Its exit code is pytest's (or the failed check's).
set -euo pipefail
cd "$(dirname "$0")/.."

STARTED=()  # the scripts/*-local.sh whose server this run started, in start order

stop_started() {
    local rc=$? i
    trap '' INT TERM  # a second Ctrl-C does not cut the clean-up short
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        bash "scripts/${STARTED[i]}" stop || echo "test.sh: ${STARTED[i]} stop failed" >&2
    done
    exit "$rc"
}
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Export $1 as the address scripts/$2 prints; the server is stopped at exit if it did not
# answer before (noted before it starts, so a start cut short is stopped too).
local_server() {
    local address
    bash "scripts/$2" status 2>/dev/null || STARTED+=("$2")
    address=$(bash "scripts/$2")
    export "$1=$address"
}

bash scripts/bootstrap.sh

docker_answers() { command -v docker >/dev/null && timeout 5 docker info >/dev/null 2>&1; }
if [ -z "${QANAT_TEST_POSTGRES_DSN:-}" ] && ! docker_answers; then
  local_server QANAT_TEST_POSTGRES_DSN postgres-local.sh
fi
if [ -z "${QANAT_TEST_MQTT_URL:-}" ]; then  # Mosquitto from Debian, for the MQTT source
  local_server QANAT_TEST_MQTT_URL mosquitto-local.sh
fi
if [ -z "${QANAT_TEST_MYSQL_DSN:-}" ]; then  # MariaDB from Debian, for the SQL pull source
  local_server QANAT_TEST_MYSQL_DSN mariadb-local.sh
fi
if [ -z "${QANAT_TEST_NEO4J_URL:-}" ]; then  # Neo4j from Maven Central, for the Neo4j source
  local_server QANAT_TEST_NEO4J_URL neo4j-local.sh
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two pytest-xdist workers (QANAT_TEST_WORKERS; 0 runs in one process): most tests wait on
# a server or a child process rather than a core. --dist loadfile keeps a file's tests (and
# its module and session fixtures, such as the one chaos run) on one worker.
workers=${QANAT_TEST_WORKERS:-2}
# Not exec: the EXIT trap stops the servers after pytest, and exits with pytest's code.
.venv/bin/pytest -n "$workers" --dist loadfile "$@"
