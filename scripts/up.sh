#!/usr/bin/env bash
# Installs what is missing (scripts/bootstrap.sh) and starts the whole local pipeline on
# embedded defaults: Apache Kafka (127.0.0.1:9092 when free), the HTTP source (:8080 when
# free), the transform, the SQLite sink, and Mosquitto with the MQTT source when Mosquitto
# is installed; `qanat up` prints every address it takes. Extra arguments go to `qanat up`.
# Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "up.sh: qanat is .venv/bin/qanat; 'source .venv/bin/activate' puts it on a shell's PATH" >&2
exec .venv/bin/qanat up "$@"
