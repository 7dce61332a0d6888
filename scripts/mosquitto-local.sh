#!/usr/bin/env bash
# Start a local Mosquitto MQTT broker for qanat's tests and print its URL (the only stdout line).
#
# Idempotent and quick when everything is already in place. Installs Debian's `mosquitto`
# package if no broker binary is found (as root), then runs a broker of its own (not the
# system service) on 127.0.0.1 with persistence on, so QoS 1 sessions survive its restarts:
#   config, data and log in $QANAT_MOSQUITTO_DIR (default /var/tmp/qanat-mosquitto),
#   port $QANAT_MOSQUITTO_PORT (default 1883), anonymous clients allowed (loopback only).
#
#   export QANAT_TEST_MQTT_URL="$(scripts/mosquitto-local.sh)"
#
# Verbs: `start` (the default, above); `status` exits 0 when a broker answers on the port
# (then `start` starts none); `stop` stops the broker this script started in the directory
# (its pid file), never another one that answers on the port.
set -euo pipefail

VERB=${1:-start}
PORT=${QANAT_MOSQUITTO_PORT:-1883}
DIR=${QANAT_MOSQUITTO_DIR:-/var/tmp/qanat-mosquitto}
URL="mqtt://127.0.0.1:${PORT}"
PID_FILE="$DIR/mosquitto.pid"

log() { printf 'mosquitto-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/local-common.sh
source "$(dirname "$0")/local-common.sh"

broker_binary() {
    command -v mosquitto 2>/dev/null && return 0
    [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto && return 0
    return 1
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }
ours() { running_pid "$PID_FILE" "$DIR/mosquitto.conf"; }

case $VERB in
    start) ;;
    status) answers && exit 0 || exit 1 ;;
    stop)
        if PID=$(ours); then
            log "stopping the broker in ${DIR} (pid ${PID})"
            stop_pid "$PID" 10
            rm -f "$PID_FILE"
        elif answers; then
            log "port ${PORT} answers, but not a broker of ${DIR}: left alone"
        fi
        exit 0
        ;;
    *) die "usage: $0 [start|status|stop]" ;;
esac

# openssl: the TLS test makes a self-signed certificate with it.
if ! BINARY=$(broker_binary) || ! command -v openssl >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "install Debian's mosquitto and openssl packages (or run as root)"
    command -v apt-get >/dev/null || die "no mosquitto or openssl, and no apt-get to install them"
    log "installing the mosquitto and openssl packages"
    export DEBIAN_FRONTEND=noninteractive
    [[ -n $(find /var/lib/apt/lists -name '*Packages*' -mmin -1440 2>/dev/null | head -1) ]] \
        || apt-get update -qq >&2
    apt-get install -y -qq mosquitto openssl >&2
    BINARY=$(broker_binary) || die "mosquitto installed but no broker binary found"
fi

mkdir -p "$DIR/data"
if ours >/dev/null && answers; then
    log "already running (pid $(cat "$PID_FILE"))"
    echo "$URL"
    exit 0
fi
if answers; then
    log "port ${PORT} is taken by another broker: using it (set QANAT_MOSQUITTO_PORT to run ours)"
    echo "$URL"
    exit 0
fi

cat > "$DIR/mosquitto.conf" <<EOF
# Written by scripts/mosquitto-local.sh: qanat's test broker, loopback only.
user root
pid_file ${PID_FILE}
persistence true
persistence_location ${DIR}/data/
autosave_interval 1
persistent_client_expiration 1d
log_dest file ${DIR}/mosquitto.log
log_type error
log_type warning
listener ${PORT} 127.0.0.1
allow_anonymous true
EOF

log "starting $("$BINARY" -h 2>/dev/null | head -1) on 127.0.0.1:${PORT} (log: ${DIR}/mosquitto.log)"
"$BINARY" -c "$DIR/mosquitto.conf" -d
for _ in $(seq 1 50); do
    answers && break
    sleep 0.1
done
answers || die "mosquitto does not answer on port ${PORT}: see ${DIR}/mosquitto.log"

log "ready"
echo "$URL"
