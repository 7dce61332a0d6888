"""The pull-source SDK's pure logic: schedules, the retry policy, paths and field mapping,
record encoding; and the doctests of its modules. (Against the real broker: the example in
test_base_example.py, the REST collector in test_rest_kafka.py.)"""

from __future__ import annotations

import doctest
import importlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import orjson
import pytest
from pydantic import ValidationError

from pipelines.core.errors import RetriableError
from pipelines.core.topics import TopicNames
from sources.base import Page, PullSource, PullSourceSettings, get_path
from sources.retry import (
    BadDataError,
    RetryLaterError,
    RetrySettings,
    SourceStoppedError,
    call_with_retry,
    parse_retry_after,
)
from sources.runner import connector_kinds, load_connector
from sources.schedule import Schedule

NOON = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "module",
    [
        "sources.base",
        "sources.pull_settings",
        "sources.retry",
        "sources.schedule",
        "sources.runner",
        "sources.rest",
        "sources.graphql",
        "examples.feed_source",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


def test_schedule_interval_cron_and_shorthands() -> None:
    assert Schedule.model_validate(30).next_after(NOON) == NOON + timedelta(seconds=30)
    assert Schedule.model_validate("2.5").every == 2.5
    hourly = Schedule.model_validate({"cron": "0 * * * *"})
    assert hourly.next_after(NOON) == NOON + timedelta(hours=1)
    assert Schedule().next_after(NOON) == NOON + timedelta(seconds=60)
    with pytest.raises(ValidationError, match="not a valid cron"):
        Schedule.model_validate("every day")
    with pytest.raises(ValidationError, match="either every or cron"):
        Schedule(every=1, cron="* * * * *")
    with pytest.raises(ValidationError):
        Schedule(every=0)


def test_backoff_grows_to_its_cap_and_honours_retry_after() -> None:
    policy = RetrySettings(initial_delay=0.5, multiplier=3, max_delay=4, jitter=0)
    assert [policy.delay(n) for n in range(1, 5)] == [0.5, 1.5, 4.0, 4.0]
    assert policy.delay(1, retry_after=10) == 10.0
    jittered = RetrySettings(initial_delay=1, jitter=0.5)
    assert all(1.0 <= jittered.delay(1) <= 1.5 for _ in range(20))


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) == 0.0 and parse_retry_after("soon") == 0.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(later) <= 30


def test_call_with_retry_retries_retriable_errors_only() -> None:
    waits: list[float] = []
    outcomes: list[Exception | str] = [RetryLaterError("busy", 2.0), RetriableError("down"), "ok"]

    def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    policy = RetrySettings(initial_delay=0.1, jitter=0)
    assert call_with_retry(attempt, policy, wait) == "ok"
    assert waits == [2.0, 0.2]  # Retry-After, then the backoff of the 2nd try
    with pytest.raises(BadDataError):
        call_with_retry(lambda: (_ for _ in ()).throw(BadDataError("400")), policy, wait)
    with pytest.raises(RetriableError):
        call_with_retry(
            lambda: (_ for _ in ()).throw(RetriableError("x")), RetrySettings(attempts=1)
        )
    with pytest.raises(SourceStoppedError):
        call_with_retry(lambda: (_ for _ in ()).throw(RetriableError("x")), policy, lambda s: True)


def test_paths_and_field_mapping() -> None:
    body = {"data": {"items": [{"id": 1}, {"id": 2}]}}
    assert get_path(body, "data.items.1.id") == 2
    assert get_path(body, "data.items.-1.id") == 2
    assert get_path(body, "data.missing.x") is None and get_path(body, "data.items.9") is None
    settings = PullSourceSettings(
        kind="k",
        name="n",
        vertical="shop",
        type="product",
        source_id_field="sku.code",
        name_field="title",
    )
    mapped = settings.map_record({"sku": {"code": 42}, "title": "Lamp"})
    assert mapped["source_id"] == "42" and mapped["name"] == "Lamp"
    kept = settings.map_record({"source_id": "own", "name": "Mine", "sku": {"code": 1}})
    assert (kept["source_id"], kept["name"]) == ("own", "Mine")
    with pytest.raises(ValidationError, match="vertical 'Shop'"):
        PullSourceSettings(kind="k", name="n", vertical="Shop", type="product")
    with pytest.raises(ValidationError):
        PullSourceSettings(kind="k", name="bad name", vertical="shop", type="product")


class Rows(PullSource[PullSourceSettings]):
    kind = "rows"

    def poll(self, cursor: object) -> list[Page]:
        return [Page([{"id": 1}], 1)]


def test_encoding_maps_fields_and_serializes_database_types() -> None:
    settings = PullSourceSettings(
        kind="rows", name="r", vertical="shop", type="product", source_id_field="id"
    )
    source = Rows(settings, TopicNames("t"))
    value, obj = source.encode({"id": 7, "price": Decimal("9.50"), "qty": Decimal(3)})
    assert orjson.loads(value) == {"id": 7, "price": 9.5, "qty": 3, "source_id": "7"}
    assert obj["source_id"] == "7"
    assert source.encode(b"not json") == (b"not json", None)  # bytes go untouched


def test_connectors_are_found_by_kind_or_module_path() -> None:
    assert {"rest", "graphql"} <= set(connector_kinds())
    assert load_connector("rest").kind == "rest"
    assert load_connector("examples.feed_source:FeedSource").kind == "feed"
    with pytest.raises(LookupError, match="unknown kind 'ftp'"):
        load_connector("ftp")
    with pytest.raises(LookupError, match="not a PullSource"):
        load_connector("sources.retry:RetrySettings")
    with pytest.raises(ImportError):
        load_connector("no_such_module:Source")


def test_every_pull_connector_setting_has_a_description() -> None:
    from pipelines.cli.configdoc_pull import flatten, pull_connector_models

    for kind, model in pull_connector_models():
        missing = [key for key, info, _ in flatten(model) if not info.description]
        assert not missing, f"{kind}: no description for {missing}"
