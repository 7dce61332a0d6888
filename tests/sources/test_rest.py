"""The REST collector against a real local HTTP server: every pagination style, auth,
retries (429 with Retry-After, 500), a bad page (400) skipped; no Kafka here (see
test_rest_kafka.py for the records in the raw topic and restarts)."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.core.topics import TopicNames
from sources.rest import RestSettings, RestSource
from tests.sources.pull_routes import PAGE, TOKEN, serve_rest
from tests.sources.pull_server import Reply, catalog_of, pull_server

FAST_RETRY = {"attempts": 4, "initial_delay": 0.05, "max_delay": 0.2}


def source(url: str, **options: Any) -> RestSource:
    settings = RestSettings(
        name="shop-api",
        vertical="shop",
        type="product",
        url=url,
        retry=FAST_RETRY,
        source_id_field="id",
        name_field="title",
        **options,
    )
    rest = RestSource(settings, TopicNames("test"))
    rest.open()
    return rest


def ids(pages: list[Any]) -> list[str]:
    return [record["id"] for page in pages for record in page.records]


STYLES = {
    "page": ("/products", {"type": "page", "size": PAGE}, "data.items"),
    "offset": ("/offset", {"type": "offset", "limit": PAGE}, None),
    "cursor": ("/cursor", {"type": "cursor", "cursor_path": "meta.next"}, "items"),
    "link": ("/link", {"type": "link"}, None),
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_pagination_style_fetches_each_record_once(style: str) -> None:
    path, pagination, records_path = STYLES[style]
    catalog = catalog_of(25)
    with pull_server() as server:
        serve_rest(server, catalog)
        rest = source(
            server.url + path,
            pagination=pagination,
            records_path=records_path,
            auth={"type": "bearer", "token": TOKEN},
            incremental={"field": "updated_at", "param": "since"},
        )
        pages = list(rest.poll(None))
    assert ids(pages) == [f"p{n:02d}" for n in range(1, 26)]
    assert len(server.requests) == 3
    assert pages[0].cursor["next"] is not None  # a restart would go on from page 2
    assert pages[-1].cursor == {
        "since": catalog.products["p25"]["updated_at"],
        "largest": catalog.products["p25"]["updated_at"],
        "next": None,
    }


def test_incremental_cursor_asks_only_for_what_changed() -> None:
    catalog = catalog_of(12)
    with pull_server() as server:
        serve_rest(server, catalog)
        rest = source(
            server.url + "/offset?flavour=plain",  # a query of its own is kept
            pagination={"type": "offset", "limit": PAGE},
            incremental={"field": "updated_at", "param": "since"},
        )
        first = list(rest.poll(None))
        catalog.upsert("p03", "Product 3, renamed")
        catalog.upsert("p13", "Product 13")
        second = list(rest.poll(first[-1].cursor))
    assert ids(second) == ["p03", "p13"]
    assert server.requests[-1].query["since"] == first[-1].cursor["since"]
    assert "since" not in server.requests[0].query  # nothing to ask from at first
    assert {r.query["flavour"] for r in server.requests} == {"plain"}


def test_auth_headers_basic_and_api_key() -> None:
    with pull_server() as server:
        serve_rest(server, catalog_of(2))
        basic = source(
            server.url + "/link", auth={"type": "basic", "username": "u", "password": "p"}
        )
        list(basic.poll(None))
        keyed = source(
            server.url + "/link", auth={"type": "api_key", "header": "X-Key", "key": "k1"}
        )
        list(keyed.poll(None))
    assert server.requests[0].headers["authorization"] == "Basic dTpw"
    assert server.requests[1].headers["x-key"] == "k1"


def test_429_retry_after_is_honoured_and_500_retried() -> None:
    with pull_server() as server:
        serve_rest(server, catalog_of(3))
        server.fail_next("/link", Reply(429, {"error": "slow down"}, {"Retry-After": "1"}))
        server.fail_next("/link", Reply(503, {"error": "busy"}))
        pages = list(source(server.url + "/link").poll(None))
    assert ids(pages) == ["p01", "p02", "p03"]
    throttled, failed, served = server.requests
    assert failed.at - throttled.at >= 1.0  # waited as long as Retry-After said
    assert served.at - failed.at < 1.0  # a 500 backs off from initial_delay


def test_bad_page_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with pull_server() as server:
        serve_rest(server, catalog_of(25), bad_offsets={10})
        rest = source(server.url + "/offset", pagination={"type": "offset", "limit": PAGE})
        pages = list(rest.poll(None))
    assert ids(pages) == [f"p{n:02d}" for n in [*range(1, 11), *range(21, 26)]]
    assert [r.query["offset"] for r in server.requests] == ["0", "10", "20"]  # 400: no retry
    assert "bad page skipped" in caplog.text


def test_unauthorized_is_fatal() -> None:
    from pipelines.core.errors import FatalError

    with pull_server() as server:
        serve_rest(server, catalog_of(3))
        rest = source(
            server.url + "/products", pagination={"type": "page"}, records_path="data.items"
        )
        with pytest.raises(FatalError, match="401"):
            list(rest.poll(None))
