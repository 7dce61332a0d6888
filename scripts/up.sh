#!/usr/bin/env bash
# Installs what is missing (scripts/bootstrap.sh) and starts the whole local pipeline on
# embedded defaults: Apache Kafka on 127.0.0.1:9092, the HTTP source on :8080, the
# transform and the SQLite sink. Extra arguments go to `qanat up`. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/qanat up "$@"
