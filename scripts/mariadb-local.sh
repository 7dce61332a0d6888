#!/usr/bin/env bash
# Start a local MariaDB server for qanat's tests and print its DSN (the only stdout line).
#
# Idempotent and quick when everything is already in place. Run as root on Debian/Ubuntu:
#   installs the `mariadb-server` package if no server binary is found, starts `mariadbd`
#   on 127.0.0.1:3306 (no systemd needed), and creates the user `qanat` (password `qanat`)
#   and the database `qanat_test` it may use.
#
#   export QANAT_TEST_MYSQL_DSN="$(scripts/mariadb-local.sh)"
#
# Verbs: `start` (the default, above); `status` exits 0 when a server answers on the socket
# (then `start` starts none); `stop` shuts the server on the socket down (mariadb-admin
# shutdown; SIGTERM to the pid this script started if it no longer answers).
# QANAT_MARIADB_PORT (default 3306) and QANAT_MARIADB_DIR (data, socket, pid and log in
# that directory instead of /var/lib/mysql, /run/mysqld and /var/log/mysql) run another one.
set -euo pipefail

VERB=${1:-start}
USER_NAME=qanat
PASSWORD=qanat
DATABASE=qanat_test
PORT=${QANAT_MARIADB_PORT:-3306}
if [[ -n ${QANAT_MARIADB_DIR:-} ]]; then
    DATADIR=$QANAT_MARIADB_DIR/data
    SOCKET=$QANAT_MARIADB_DIR/mysqld.sock
    PID_FILE=$QANAT_MARIADB_DIR/mariadbd.pid
    ERROR_LOG=$QANAT_MARIADB_DIR/mariadbd.err
else
    DATADIR=/var/lib/mysql
    SOCKET=/run/mysqld/mysqld.sock
    PID_FILE=/run/mysqld/qanat-local.pid
    ERROR_LOG=/var/log/mysql/qanat-local.err
fi
DSN="mysql://${USER_NAME}:${PASSWORD}@127.0.0.1:${PORT}/${DATABASE}"

log() { printf 'mariadb-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/local-common.sh
source "$(dirname "$0")/local-common.sh"

client() { mariadb --protocol=socket -S "$SOCKET" -u root "$@"; }
answers() { mariadb-admin --protocol=socket -S "$SOCKET" -u root ping >/dev/null 2>&1; }

case $VERB in
    start) ;;
    status) answers && exit 0 || exit 1 ;;
    stop)
        [[ $(id -u) -eq 0 ]] || die "run as root (it stops the system MariaDB)"
        if answers; then
            log "shutting down the server on ${SOCKET}"
            mariadb-admin --protocol=socket -S "$SOCKET" -u root shutdown >&2
        fi
        if PID=$(running_pid "$PID_FILE" "--socket=${SOCKET}"); then
            log "stopping mariadbd (pid ${PID})"
            stop_pid "$PID" 60
        fi
        exit 0
        ;;
    *) die "usage: $0 [start|status|stop]" ;;
esac

[[ $(id -u) -eq 0 ]] || die "run as root (it installs and starts the system MariaDB)"

if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
    log "no MariaDB server found: installing the mariadb-server package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # No service start from the package scripts (there may be no init system): we start it.
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef mariadb-server >&2
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

if ! answers; then
    install -d -o mysql -g mysql "$(dirname "$SOCKET")" "$(dirname "$PID_FILE")" \
        "$(dirname "$ERROR_LOG")"
    if [[ ! -d ${DATADIR}/mysql ]]; then
        log "initializing ${DATADIR}"
        mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db >&2
    fi
    log "starting mariadbd on 127.0.0.1:${PORT}"
    nohup "$MARIADBD" --user=mysql --datadir="$DATADIR" --socket="$SOCKET" \
        --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve \
        --pid-file="$PID_FILE" --log-error="$ERROR_LOG" >/dev/null 2>&1 &
    for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
    done
    answers || die "mariadbd does not answer on ${SOCKET} (see ${ERROR_LOG})"
fi

client <<SQL
CREATE DATABASE IF NOT EXISTS \`${DATABASE}\`;
CREATE USER IF NOT EXISTS '${USER_NAME}'@'127.0.0.1' IDENTIFIED BY '${PASSWORD}';
CREATE USER IF NOT EXISTS '${USER_NAME}'@'localhost' IDENTIFIED BY '${PASSWORD}';
GRANT ALL PRIVILEGES ON \`${DATABASE}\`.* TO '${USER_NAME}'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`${DATABASE}\`.* TO '${USER_NAME}'@'localhost';
SQL

log "ready"
echo "$DSN"
