#!/usr/bin/env bash
# Installs everything qanat needs to run, idempotently and quickly when already done:
# Java and Maven (Debian packages, only if missing), a Python venv with the project in
# .venv, and the Apache Kafka broker jars (fetched once by Maven into ~/.cache/qanat).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing $*: install it (Debian packages: $*) and run again"; exit 1
  fi
  log "installing $* from Debian's packages"
  [ -n "$(find /var/lib/apt/lists -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] \
    || apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
# mosquitto_pub, which the README's MQTT examples use; optional, so no root is no failure.
if ! command -v mosquitto_pub >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt_install mosquitto-clients
  else
    log "no mosquitto_pub (for the README's MQTT examples): install Debian's mosquitto-clients"
  fi
fi

python=""
for candidate in "${QANAT_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { log "Python 3.11 or newer is required"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $python"
  "$python" -m venv .venv
fi
stamp=.venv/.qanat-installed
wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  # Exact versions from constraints.txt (scripts/upgrade-deps.sh moves them forward);
  # PIP_CONSTRAINT also pins the isolated build of the project (hatchling).
  log "installing qanat and its dependencies into .venv (versions of constraints.txt)"
  export PIP_CONSTRAINT=$PWD/constraints.txt
  .venv/bin/python -m pip install -q "pip==$(sed -n 's/^pip==//p' constraints.txt)" >&2
  .venv/bin/python -m pip install -q -e '.[all,dev]' >&2
  unset PIP_CONSTRAINT
  echo "$wanted" > "$stamp"
fi
.venv/bin/qanat dev broker fetch >&2
