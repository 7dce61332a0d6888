#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one: installs what is missing
# (scripts/bootstrap.sh; PostgreSQL from Debian unless a DSN or a Docker engine is there),
# checks lint, format and types, then runs pytest against the real Kafka and PostgreSQL.
# Extra arguments go to pytest, e.g. scripts/test.sh -k http
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

docker_answers() { command -v docker >/dev/null && timeout 5 docker info >/dev/null 2>&1; }
if [ -z "${QANAT_TEST_POSTGRES_DSN:-}" ] && ! docker_answers; then
  QANAT_TEST_POSTGRES_DSN=$(bash scripts/postgres-local.sh)
  export QANAT_TEST_POSTGRES_DSN
fi
if [ -z "${QANAT_TEST_MQTT_URL:-}" ]; then  # Mosquitto from Debian, for the MQTT source
  QANAT_TEST_MQTT_URL=$(bash scripts/mosquitto-local.sh)
  export QANAT_TEST_MQTT_URL
fi
if [ -z "${QANAT_TEST_MYSQL_DSN:-}" ]; then  # MariaDB from Debian, for the SQL pull source
  QANAT_TEST_MYSQL_DSN=$(bash scripts/mariadb-local.sh)
  export QANAT_TEST_MYSQL_DSN
fi
if [ -z "${QANAT_TEST_NEO4J_URL:-}" ]; then  # Neo4j from Maven Central, for the Neo4j source
  QANAT_TEST_NEO4J_URL=$(bash scripts/neo4j-local.sh)
  export QANAT_TEST_NEO4J_URL
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
