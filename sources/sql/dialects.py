"""The two SQL dialects of :mod:`sources.sql.source`: PostgreSQL (psycopg 3) and MySQL/MariaDB
(PyMySQL). Each connects (autocommit: every query sees the latest committed rows), quotes
identifiers, runs the keyset query and classifies errors (PostgreSQL by SQLSTATE, MySQL by
its error number; never by message text).

>>> MysqlDialect().quote(["shop", "odd`name"])
'`shop`.`odd``name`'
>>> dialect_for("postgresql://u:p@db:5432/shop").name
'postgres'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pipelines.core.errors import ConfigError, FatalError, RetriableError

# PostgreSQL SQLSTATE classes worth retrying: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources, operator intervention
# (admin shutdown, cannot connect now), system error.
_PG_RETRIABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# MySQL/MariaDB error numbers worth retrying: cannot connect (2002, 2003), server gone or
# connection lost (2006, 2013, 2055), too many connections (1040), shutdown in progress
# (1053), lock wait timeout (1205), deadlock (1213), connection killed (1927).
_MYSQL_RETRIABLE = frozenset({0, 1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Dialect(Protocol):
    name: str

    def connect(self, dsn: str, timeout_s: float) -> Any:
        """An autocommit connection; raises the driver's errors."""

    def quote(self, parts: Sequence[str]) -> str:
        """A (possibly qualified) identifier, quoted."""

    def fetch(self, connection: Any, query: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows of ``query`` as dicts (column name -> value)."""

    def is_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one of the driver's errors."""

    def classify(self, exc: BaseException) -> Exception:
        """RetriableError or FatalError for a driver error."""


class PostgresDialect:
    """PostgreSQL through psycopg 3 (the ``[postgres]`` extra)."""

    name = "postgres"

    def connect(self, dsn: str, timeout_s: float) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(
            dsn, autocommit=True, row_factory=dict_row, connect_timeout=max(1, int(timeout_s))
        )

    def quote(self, parts: Sequence[str]) -> str:
        return ".".join('"' + part.replace('"', '""') + '"' for part in parts)

    def fetch(self, connection: Any, query: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return list(cursor.fetchall())

    def is_error(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.Error)

    def classify(self, exc: BaseException) -> Exception:
        state: str | None = getattr(exc, "sqlstate", None)
        if state is None:  # raised by libpq: no connection, or the connection was lost
            return RetriableError(f"PostgreSQL connection: {_first_line(exc)}", 5.0)
        if state[:2] in _PG_RETRIABLE_CLASSES:
            return RetriableError(f"PostgreSQL {state}: {_first_line(exc)}", 5.0)
        return FatalError(f"PostgreSQL error {state}: {_first_line(exc)}")


class MysqlDialect:
    """MySQL and MariaDB through PyMySQL (the ``[mysql]`` extra)."""

    name = "mysql"

    def connect(self, dsn: str, timeout_s: float) -> Any:
        import pymysql
        import pymysql.cursors

        parts = urlsplit(dsn)
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or None,
            charset=options.get("charset", "utf8mb4"),
            autocommit=True,
            connect_timeout=timeout_s,
            cursorclass=pymysql.cursors.DictCursor,
        )

    def quote(self, parts: Sequence[str]) -> str:
        return ".".join("`" + part.replace("`", "``") + "`" for part in parts)

    def fetch(self, connection: Any, query: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with connection.cursor() as cursor:
            cursor.execute(query, tuple(params))
            return list(cursor.fetchall())

    def is_error(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.Error)

    def classify(self, exc: BaseException) -> Exception:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if code in _MYSQL_RETRIABLE:
            return RetriableError(f"MySQL {code}: {_first_line(exc)}", 5.0)
        return FatalError(f"MySQL error {code}: {_first_line(exc)}")


_SCHEMES: dict[str, type[PostgresDialect | MysqlDialect]] = {
    "postgresql": PostgresDialect,
    "postgres": PostgresDialect,
    "mysql": MysqlDialect,
    "mariadb": MysqlDialect,
}


def dialect_for(dsn: str) -> PostgresDialect | MysqlDialect:
    """The dialect of a DSN's scheme (``postgresql://``, ``mysql://``, ``mariadb://``)."""
    scheme = urlsplit(dsn).scheme.split("+")[0].lower()
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported database URL scheme {scheme!r}: use postgresql://, mysql:// or mariadb://"
        )
    return _SCHEMES[scheme]()
