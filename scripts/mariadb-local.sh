#!/usr/bin/env bash
# Start a local MariaDB server for qanat's tests and print its DSN (the only stdout line).
#
# Idempotent and quick when everything is already in place. Run as root on Debian/Ubuntu:
#   installs the `mariadb-server` package if no server binary is found, starts `mariadbd`
#   on 127.0.0.1:3306 (no systemd needed), and creates the user `qanat` (password `qanat`)
#   and the database `qanat_test` it may use.
#
#   export QANAT_TEST_MYSQL_DSN="$(scripts/mariadb-local.sh)"
set -euo pipefail

USER_NAME=qanat
PASSWORD=qanat
DATABASE=qanat_test
PORT=3306
SOCKET=/run/mysqld/mysqld.sock
DATADIR=/var/lib/mysql
DSN="mysql://${USER_NAME}:${PASSWORD}@127.0.0.1:${PORT}/${DATABASE}"

log() { printf 'mariadb-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs and starts the system MariaDB)"

if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
    log "no MariaDB server found: installing the mariadb-server package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # No service start from the package scripts (there may be no init system): we start it.
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef mariadb-server >&2
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

client() { mariadb --protocol=socket -S "$SOCKET" -u root "$@"; }
answers() { mariadb-admin --protocol=socket -S "$SOCKET" -u root ping >/dev/null 2>&1; }

if ! answers; then
    install -d -o mysql -g mysql /run/mysqld /var/log/mysql
    if [[ ! -d ${DATADIR}/mysql ]]; then
        log "initializing ${DATADIR}"
        mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db >&2
    fi
    log "starting mariadbd on 127.0.0.1:${PORT}"
    nohup "$MARIADBD" --user=mysql --datadir="$DATADIR" --socket="$SOCKET" \
        --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve \
        --log-error=/var/log/mysql/qanat-local.err >/dev/null 2>&1 &
    for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
    done
    answers || die "mariadbd does not answer on ${SOCKET} (see /var/log/mysql/qanat-local.err)"
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
