"""API keys of the HTTP source: ``Authorization: Bearer qk_<id>_<secret>``.

A key has a name, scopes (``write``: ingest; ``read``: the read routes; ``admin``:
register schemas) and the verticals it may touch (or all of them). Only a hash of its
secret is stored; the plaintext is shown once, when the key is created
(``qanat keys create``), and is never stored nor logged.

The hash is SHA-256 over the key id and secret, not a slow password hash (scrypt, bcrypt):
the secret is 256 random bits (``secrets.token_urlsafe(32)``), so guessing it from a
leaked hash is infeasible whatever the hash's speed, and a fast hash keeps the check
cheap on every request. The id, which is not secret, is the lookup key.

:class:`KeyStore` is the storage contract; :class:`SQLiteKeyStore` the default
implementation (``<QANAT_DATA_DIR>/keys.db``). A PostgreSQL store implements the same
five methods over the same table.

>>> key_id, secret = parse_key(format_key("0123456789abcdef", "s3_cr-et"))
>>> key_id, secret
('0123456789abcdef', 's3_cr-et')
>>> parse_key("Bearer nope") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from pipelines.core.records import check_identifier, now
from sources.http.errors import ApiError

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
PREFIX = "qk_"
ALL = "*"
#: The WebSocket subprotocol a browser offers to carry its key: ``bearer.<key>``; it must
#: also offer ``qanat.v1``, which the server selects (it never echoes the key).
SUBPROTOCOL_PREFIX = "bearer."
SUBPROTOCOL = "qanat.v1"
#: For the OpenAPI document only (the /docs "Authorize" button); the check is ours.
BEARER = HTTPBearer(auto_error=False, description="An API key from `qanat keys create`.")


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None. Ids are hex, so the first ``_``
    after the prefix ends the id (the secret may contain ``_``)."""
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


def hash_secret(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret. ``verticals`` None: every vertical."""

    id: str
    name: str
    scopes: frozenset[str]
    verticals: frozenset[str] | None
    created_at: str
    revoked_at: str | None = None

    def allows(self, scope: str, vertical: str) -> bool:
        return scope in self.scopes and (self.verticals is None or vertical in self.verticals)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "verticals": ALL if self.verticals is None else sorted(self.verticals),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


class KeyStore(Protocol):
    """Where API keys live. Implementations store ``hash_secret(id, secret)``, never
    the secret."""

    def add(self, key: ApiKey, secret_hash: str) -> None: ...

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its stored secret hash."""
        ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke(self, key_id: str) -> bool:
        """Mark the key revoked; False if there is no such key."""
        ...


def create_key(
    store: KeyStore, name: str, scopes: Iterable[str], verticals: Iterable[str] | None
) -> tuple[ApiKey, str]:
    """Make, store and return a new key and its plaintext (to show once)."""
    scope_set = frozenset(scopes)
    unknown = scope_set - set(SCOPES)
    if not scope_set or unknown:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}, got {sorted(scope_set)}")
    vertical_set = None
    if verticals is not None:
        vertical_set = frozenset(check_identifier("vertical", v) for v in verticals)
        if not vertical_set:
            raise ValueError("name at least one vertical, or all verticals")
    if not name.strip():
        raise ValueError("the key needs a name")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    key = ApiKey(key_id, name.strip(), scope_set, vertical_set, now())
    store.add(key, hash_secret(key_id, secret))
    return key, format_key(key_id, secret)


def verify(store: KeyStore, token: str) -> ApiKey | None:
    """The live (not revoked) key ``token`` is, else None."""
    parsed = parse_key(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    found = store.lookup(key_id)
    if found is None:
        return None
    key, stored_hash = found
    if not hmac.compare_digest(stored_hash, hash_secret(key_id, secret)):
        return None
    return None if key.revoked_at is not None else key


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    verticals TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


class SQLiteKeyStore:
    """Keys in a SQLite file; one short connection per call, so the CLI (another process)
    can create and revoke keys while the service runs, and a revocation applies at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            yield conn

    def add(self, key: ApiKey, secret_hash: str) -> None:
        verticals = ALL if key.verticals is None else ",".join(sorted(key.verticals))
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.name,
                    secret_hash,
                    ",".join(sorted(key.scopes)),
                    verticals,
                    key.created_at,
                    key.revoked_at,
                ),
            )

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, name, scopes, verticals, created_at, revoked_at, secret_hash "
                "FROM api_keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else (_key(row), row[6])

    def list_keys(self) -> list[ApiKey]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, name, scopes, verticals, created_at, revoked_at "
                "FROM api_keys ORDER BY created_at, id"
            ).fetchall()
        return [_key(row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        with self._connect() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (now(), key_id),
            )
        return cursor.rowcount > 0


def _key(row: tuple[str, ...]) -> ApiKey:
    key_id, name, scopes, verticals, created_at, revoked_at = row[:6]
    return ApiKey(
        key_id,
        name,
        frozenset(scopes.split(",")),
        None if verticals == ALL else frozenset(verticals.split(",")),
        created_at,
        revoked_at,
    )


def key_store_path(keys_path: Path | None, data_dir: Path) -> Path:
    return keys_path if keys_path is not None else data_dir / "keys.db"


class Authenticator:
    """Checks the bearer key of a request: 401 without a live key, 403 out of scope.
    With ``store`` None (``auth: none``, development) every request is allowed."""

    def __init__(self, store: KeyStore | None) -> None:
        self.store = store

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The request's key (None when auth is off); 401 :class:`ApiError` otherwise."""
        if self.store is None:
            return None
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise _unauthorized("missing_api_key", "missing Authorization: Bearer <key> header")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("invalid_authorization", "expected Authorization: Bearer <key>")
        key = verify(self.store, token.strip())
        if key is None:
            raise _unauthorized("invalid_api_key", "unknown or revoked API key")
        return key

    def require(self, scope: str) -> Callable[..., ApiKey | None]:
        """A FastAPI dependency: the request's key, checked for ``scope`` on the route's
        ``vertical`` path parameter if it has one, else for ``scope`` alone (the route
        then calls :meth:`authorize` once it knows the vertical). Dependencies run before
        the route reads anything, so a request is refused (401, 403) before its body,
        query or path is validated. It is synchronous, so FastAPI runs it in its thread
        pool: a key store lookup never blocks the event loop."""

        def dependency(
            request: Request,
            _doc: HTTPAuthorizationCredentials | None = Security(BEARER),  # noqa: B008
        ) -> ApiKey | None:
            key = self.authenticate(request.headers.get("authorization"))
            vertical = request.path_params.get("vertical")
            if isinstance(vertical, str):
                self.authorize(key, scope, vertical)
            else:
                check_scope(key, scope)
            return key

        return dependency

    def connection_key(self, conn: HTTPConnection, scope: str, vertical: str) -> ApiKey | None:
        """The key of a WebSocket or server-sent-events connection, checked for ``scope``
        on ``vertical``; 401/403 :class:`ApiError` otherwise. Browsers cannot set headers on
        those, so besides ``Authorization: Bearer`` the key may come as ``?token=<key>``
        or as the WebSocket subprotocol ``bearer.<key>``. Blocking (a key store lookup):
        call it from a thread."""
        authorization = conn.headers.get("authorization")
        if authorization is None:
            token = conn.query_params.get("token") or connection_subprotocol_key(conn)
            authorization = f"Bearer {token}" if token else None
        key = self.authenticate(authorization)
        self.authorize(key, scope, vertical)
        return key

    def is_live(self, key: ApiKey | None) -> bool:
        """Whether ``key`` is still stored and not revoked (blocking: call it from a thread)."""
        if self.store is None or key is None:
            return True
        found = self.store.lookup(key.id)
        return found is not None and found[0].revoked_at is None

    @staticmethod
    def authorize(key: ApiKey | None, scope: str, vertical: str) -> None:
        """403 :class:`ApiError` unless ``key`` (None: auth is off) allows it."""
        if key is None or key.allows(scope, vertical):
            return
        if scope not in key.scopes:
            raise _forbidden(f"this API key has no {scope} scope")
        raise _forbidden(f"this API key may not access vertical {vertical!r}")


def check_scope(key: ApiKey | None, scope: str) -> None:
    """403 :class:`ApiError` unless ``key`` (None: auth is off) has ``scope``."""
    if key is not None and scope not in key.scopes:
        raise _forbidden(f"this API key has no {scope} scope")


def connection_subprotocol_key(conn: HTTPConnection) -> str | None:
    """The key a WebSocket client offered as the subprotocol ``bearer.<key>``, if any."""
    offered = conn.headers.get("sec-websocket-protocol", "")
    for protocol in offered.split(","):
        protocol = protocol.strip()
        if protocol.startswith(SUBPROTOCOL_PREFIX):
            return protocol[len(SUBPROTOCOL_PREFIX) :]
    return None


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message, "header.authorization")


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(
        401, code, message, "header.authorization", headers={"WWW-Authenticate": "Bearer"}
    )
