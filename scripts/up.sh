#!/usr/bin/env bash
# Installs what is missing (scripts/bootstrap.sh) and starts the whole local pipeline on
# embedded defaults: Apache Kafka on 127.0.0.1:9092, the HTTP source on :8080, the
# transform and the SQLite sink, and the MQTT source when Mosquitto is installed.
# Extra arguments go to `qanat up`. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# With Mosquitto installed (Debian's mosquitto package), the MQTT source joins the pipeline.
if [ -z "${QANAT_MQTT_URL:-}" ] && { command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null; then
  QANAT_MQTT_URL=$(bash scripts/mosquitto-local.sh)
  export QANAT_MQTT_URL
fi
exec .venv/bin/qanat up "$@"
