"""The REST polling collector: pages through a JSON API on a schedule, records to Kafka.

Auth (bearer, basic, API-key header), a path to the records array, pagination (page
number, offset/limit, a cursor field of the body, the ``Link`` header), and an incremental
cursor: the largest value of a field (``updated_at``) seen, sent as a query parameter
(``updated_since``) on the next poll. The position inside a poll is saved after every page,
so a restart goes on from the next page; retries are :mod:`sources.retry`'s.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from sources.base import Page, PullSource, PullSourceSettings, get_path
from sources.retry import BadDataError, http_request

logger = logging.getLogger(__name__)
#: Bad (HTTP 400) pages in a row after which a poll ends.
MAX_BAD_PAGES = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- auth -----------------------------------------------------------------------------


class BearerAuth(_Model):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"] = Field(description="bearer: this variant.")
    token: SecretStr = Field(description="The token; in YAML best as ${ENV_VAR}.")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.get_secret_value()}"}


class BasicAuth(_Model):
    """HTTP basic authentication."""

    type: Literal["basic"] = Field(description="basic: this variant.")
    username: str = Field(description="User name.")
    password: SecretStr = Field(description="Password; in YAML best as ${ENV_VAR}.")

    def headers(self) -> dict[str, str]:
        pair = f"{self.username}:{self.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


class ApiKeyAuth(_Model):
    """An API key in a request header."""

    type: Literal["api_key"] = Field(description="api_key: this variant.")
    header: str = Field("X-API-Key", description="The header that carries the key.")
    key: SecretStr = Field(description="The key; in YAML best as ${ENV_VAR}.")

    def headers(self) -> dict[str, str]:
        return {self.header: self.key.get_secret_value()}


Auth = Annotated[BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")]

# --- pagination -----------------------------------------------------------------------
# A position says which page to fetch next: a page number, an offset, a cursor token or a
# URL. It is saved with the checkpoint, so it must be JSON-able.


class NoPagination(_Model):
    """One request returns everything."""

    type: Literal["none"] = Field(description="none: this variant.")

    def start(self) -> Any:
        return None

    def params(self, position: Any) -> dict[str, Any]:
        return {}

    def after(self, position: Any, response: httpx.Response, body: Any, count: int) -> Any:
        return None

    def skip(self, position: Any) -> Any:
        return None


class PageNumberPagination(NoPagination):
    """``?page=1&per_page=100``, then 2, 3, ... until a page is short."""

    type: Literal["page"] = Field(description="page: this variant.")  # type: ignore[assignment]
    page_param: str = Field("page", description="Query parameter of the page number.")
    size_param: str | None = Field("per_page", description="Query parameter of the page size.")
    size: int = Field(100, ge=1, description="Records per page; a shorter page is the last.")
    first_page: int = Field(1, ge=0, description="Number of the first page.")

    def start(self) -> Any:
        return self.first_page

    def params(self, position: Any) -> dict[str, Any]:
        sizing = {self.size_param: self.size} if self.size_param else {}
        return {self.page_param: position, **sizing}

    def after(self, position: Any, response: httpx.Response, body: Any, count: int) -> Any:
        return position + 1 if count >= self.size else None

    def skip(self, position: Any) -> Any:
        return position + 1


class OffsetPagination(NoPagination):
    """``?offset=0&limit=100``, then offset 100, 200, ... until a page is short."""

    type: Literal["offset"] = Field(description="offset: this variant.")  # type: ignore[assignment]
    offset_param: str = Field("offset", description="Query parameter of the offset.")
    limit_param: str = Field("limit", description="Query parameter of the page size.")
    limit: int = Field(100, ge=1, description="Records per page; a shorter page is the last.")

    def start(self) -> Any:
        return 0

    def params(self, position: Any) -> dict[str, Any]:
        return {self.offset_param: position, self.limit_param: self.limit}

    def after(self, position: Any, response: httpx.Response, body: Any, count: int) -> Any:
        return position + self.limit if count >= self.limit else None

    def skip(self, position: Any) -> Any:
        return position + self.limit


class CursorPagination(NoPagination):
    """The body names the next page's cursor (``next_cursor``); it is sent back as a query
    parameter until it is missing or empty."""

    type: Literal["cursor"] = Field(description="cursor: this variant.")  # type: ignore[assignment]
    cursor_param: str = Field("cursor", description="Query parameter of the cursor.")
    cursor_path: str = Field(description="Dotted path of the next cursor in the body.")

    def params(self, position: Any) -> dict[str, Any]:
        return {self.cursor_param: position} if position else {}

    def after(self, position: Any, response: httpx.Response, body: Any, count: int) -> Any:
        token = get_path(body, self.cursor_path)
        return str(token) if token not in (None, "") and count else None


class LinkPagination(NoPagination):
    """The ``Link: <url>; rel="next"`` response header (RFC 8288) names the next page."""

    type: Literal["link"] = Field(description="link: this variant.")  # type: ignore[assignment]

    def after(self, position: Any, response: httpx.Response, body: Any, count: int) -> Any:
        following = response.links.get("next", {}).get("url")
        return str(response.url.join(following)) if following else None


Pagination = Annotated[
    NoPagination | PageNumberPagination | OffsetPagination | CursorPagination | LinkPagination,
    Field(discriminator="type"),
]


class Incremental(_Model):
    """Fetch only what changed: the largest ``field`` seen goes out as ``param``."""

    field: str = Field(description="Dotted path of the record field that grows (updated_at).")
    param: str = Field(description="Query parameter (or GraphQL variable) that takes it.")
    initial: str | int | float | None = Field(
        None, description="Value for the very first poll (none: fetch everything)."
    )

    def largest(self, current: Any, records: list[Any]) -> Any:
        """The largest value of the field in ``records`` and ``current``."""
        values = [get_path(r, self.field) for r in records]
        candidates = [v for v in [current, *values] if v is not None]
        if not candidates:
            return None
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in candidates):
            return max(candidates)
        return max(candidates, key=str)


class HttpPullSettings(PullSourceSettings):
    """What the HTTP pull connectors share: how to reach the API."""

    auth: Auth | None = Field(None, description="bearer, basic or api_key authentication.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (not for secrets: use auth)."
    )
    timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for each response.")

    def client(self) -> httpx.Client:
        """An HTTP client sending the auth and extra headers with every request."""
        auth = self.auth.headers() if self.auth else {}
        return httpx.Client(
            headers={"Accept": "application/json", **self.headers, **auth},
            timeout=self.timeout_s,
            follow_redirects=True,
        )


H = TypeVar("H", bound=HttpPullSettings)


class HttpPullSource(PullSource[H]):
    """A pull source with an HTTP client (``self.client``) made from its settings."""

    client: httpx.Client | None = None

    def open(self) -> None:
        self.client = self.settings.client()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        """One request with this source's retry policy (:func:`sources.retry.http_request`)."""
        if self.client is None:
            raise RuntimeError("the source is not open")
        return http_request(self.client, method, url, self.settings.retry, self.wait, **options)


class RestSettings(HttpPullSettings):
    """A JSON API polled by ``qanat collect`` (kind: rest)."""

    kind: Literal["rest"] = Field("rest", description="The connector: rest.")
    url: str = Field(
        description="The endpoint to GET.", examples=["https://api.example.com/v1/items"]
    )
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Query parameters sent with every request."
    )
    records_path: str | None = Field(
        None,
        description="Dotted path of the records array in the body (none: the body).",
        examples=["data.items"],
    )
    pagination: Pagination = Field(
        default_factory=lambda: NoPagination(type="none"),
        description="none, page, offset, cursor or link.",
    )
    incremental: Incremental | None = Field(
        None, description="Fetch only records changed since the largest value seen."
    )


def json_body(response: httpx.Response) -> Any:
    """The parsed JSON body; BadDataError when it is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise BadDataError(f"{response.request.url} answered non-JSON: {exc}") from exc


def records_at(body: Any, path: str | None) -> list[Any]:
    """The records array of a response body; BadDataError when it is not one."""
    found = get_path(body, path)
    if not isinstance(found, list):
        where = path or "the top level"
        raise BadDataError(f"expected a list of records at {where}, got {type(found).__name__}")
    return found


class RestSource(HttpPullSource[RestSettings]):
    """Polls a REST API; see :class:`RestSettings`.

    >>> from pipelines.core.topics import TopicNames
    >>> settings = RestSettings(name="shop-api", vertical="shop", type="product",
    ...     url="http://127.0.0.1:8000/products", records_path="data.items",
    ...     pagination={"type": "page", "size": 50}, source_id_field="id",
    ...     incremental={"field": "updated_at", "param": "updated_since"})
    >>> RestSource(settings, TopicNames()).settings.pagination.params(2)
    {'page': 2, 'per_page': 50}
    """

    kind: ClassVar[str] = "rest"
    settings_model = RestSettings

    def poll(self, cursor: Any) -> Iterator[Page]:
        """The cursor: ``since`` (the incremental value this poll asks from), ``largest``
        (seen so far in this poll) and ``next`` (the position of the next page; None when
        the last poll finished). A page answered 400 is logged and skipped; where pages
        cannot be skipped (cursor, link) or after 3 in a row, the poll ends there."""
        state = cursor if isinstance(cursor, dict) else {}
        incremental = self.settings.incremental
        pagination = self.settings.pagination
        since = state.get("since", incremental.initial if incremental else None)
        largest = state.get("largest", since)
        position = state["next"] if state.get("next") is not None else pagination.start()
        bad_pages = 0
        while True:
            try:
                response = self._get(position, since)
                body = json_body(response)
                records = records_at(body, self.settings.records_path)
            except BadDataError as exc:
                logger.error("source %s: bad page skipped: %s", self.name, exc)
                bad_pages += 1
                position = pagination.skip(position) if bad_pages < MAX_BAD_PAGES else None
                if position is None:
                    break
                continue
            bad_pages = 0
            if incremental:
                largest = incremental.largest(largest, records)
            position = pagination.after(position, response, body, len(records))
            if position is not None:
                yield Page(records, {"since": since, "largest": largest, "next": position})
            else:  # the last page: the next poll asks from the largest value
                yield Page(records, {"since": largest, "largest": largest, "next": None})
                return
        yield Page([], {"since": largest, "largest": largest, "next": None})

    def _get(self, position: Any, since: Any) -> httpx.Response:
        pagination = self.settings.pagination
        if isinstance(pagination, LinkPagination) and position:
            # The server's next link carries every parameter (httpx would replace its
            # query with any params given, even empty ones).
            return self.request("GET", position)
        url = httpx.URL(self.settings.url)  # its own query joins the params, not replaced
        params: dict[str, Any] = {**dict(url.params), **self.settings.params}
        params |= pagination.params(position)
        if self.settings.incremental and since is not None:
            params[self.settings.incremental.param] = since
        bare = url.copy_with(query=None)
        return self.request("GET", str(bare), params=params)
