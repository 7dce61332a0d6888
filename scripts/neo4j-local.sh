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
set -euo pipefail

PORT=${QANAT_NEO4J_PORT:-7687}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/qanat/neo4j
URL="bolt://127.0.0.1:${PORT}"

log() { printf 'neo4j-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }

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
nohup java -Xmx512m -cp "$CACHE/classes:$CACHE/libs/*" Neo4jLocal "$CACHE/data" "$PORT" \
    >"$CACHE/neo4j.log" 2>&1 &
for _ in $(seq 1 360); do
    answers && break
    sleep 0.5
done
answers || die "Neo4j does not answer on port ${PORT} (see ${CACHE}/neo4j.log)"
log "ready"
echo "$URL"
