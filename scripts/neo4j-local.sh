#!/usr/bin/env bash
# Start a local Neo4j server for qanat's tests and print its Bolt URL (the only stdout line).
#
# Idempotent and quick when it already answers. The server is the real Neo4j Community
# edition from Maven Central (scripts/neo4j/pom.xml), embedded in a small launcher
# (scripts/neo4j/Neo4jLocal.java), answering Bolt on 127.0.0.1 without authentication.
# Needs a Java 17 JDK and Maven (installed from Debian's packages when missing and run as
# root); the jars are fetched once into ~/.cache/qanat/neo4j.
#
#   export QANAT_TEST_NEO4J_URL="$(scripts/neo4j-local.sh)"
#
# Verbs: `start` (the default, above); `status` exits 0 when the port answers (then `start`
# starts nothing); `stop` stops the server this script started with this data directory
# and port (its java pid), never another one that answers on the port.
# QANAT_NEO4J_PORT (default 7687) and QANAT_NEO4J_DIR (data, log and pid; default the
# cache directory) run another one.
set -euo pipefail

VERB=${1:-start}
PORT=${QANAT_NEO4J_PORT:-7687}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/qanat/neo4j
RUN_DIR=${QANAT_NEO4J_DIR:-$CACHE}
PID_FILE=$RUN_DIR/neo4j-${PORT}.pid
URL="bolt://127.0.0.1:${PORT}"

log() { printf 'neo4j-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/local-common.sh
source "$HERE/local-common.sh"
answers() { (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }

case $VERB in
    start) ;;
    status) answers && exit 0 || exit 1 ;;
    stop)
        if PID=$(running_pid "$PID_FILE" "Neo4jLocal ${RUN_DIR}/data ${PORT}"); then
            log "stopping Neo4j on port ${PORT} (pid ${PID})"
            stop_pid "$PID" 60
            rm -f "$PID_FILE"
        elif answers; then
            log "port ${PORT} answers, but not a Neo4j this script started in ${RUN_DIR}: left alone"
        fi
        exit 0
        ;;
    *) die "usage: $0 [start|status|stop]" ;;
esac

if answers; then
    echo "$URL"
    exit 0
fi
if ! command -v javac >/dev/null || ! command -v mvn >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "needs javac and mvn: install openjdk-17-jdk-headless and maven"
    log "installing a JDK and Maven from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq openjdk-17-jdk-headless maven >&2
fi

mkdir -p "$CACHE"
if [[ ! -f $CACHE/classes/Neo4jLocal.class || $HERE/neo4j/pom.xml -nt $CACHE/classes/Neo4jLocal.class \
      || $HERE/neo4j/Neo4jLocal.java -nt $CACHE/classes/Neo4jLocal.class ]]; then
    log "fetching Neo4j from Maven Central into ${CACHE}/libs"
    rm -rf "$CACHE/libs" "$CACHE/classes"
    mvn -q -B -f "$HERE/neo4j/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$CACHE/libs" >&2
    javac -cp "$CACHE/libs/*" -d "$CACHE/classes" "$HERE/neo4j/Neo4jLocal.java" >&2
fi

log "starting Neo4j on 127.0.0.1:${PORT}"
mkdir -p "$RUN_DIR"
nohup java -Xmx512m -cp "$CACHE/classes:$CACHE/libs/*" Neo4jLocal "$RUN_DIR/data" "$PORT" \
    >"$RUN_DIR/neo4j.log" 2>&1 &
echo $! >"$PID_FILE"
for _ in $(seq 1 360); do
    answers && break
    sleep 0.5
done
answers || die "Neo4j does not answer on port ${PORT} (see ${RUN_DIR}/neo4j.log)"
log "ready"
echo "$URL"
