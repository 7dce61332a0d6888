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

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
