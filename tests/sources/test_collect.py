"""``qanat collect``: a YAML file with a REST and a GraphQL source, run as a real process
on its schedule against the real broker; and every config error reported at once, with
its path."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli.main import app
from pipelines.core.config import KafkaSettings
from pipelines.devbroker import free_port
from tests.kafka_helpers import consume
from tests.services import Services
from tests.sources.pull_routes import TOKEN, serve_graphql, serve_rest
from tests.sources.pull_server import catalog_of, pull_server
from tests.sources.test_graphql import QUERY


def config(url: str) -> dict[str, object]:
    return {
        "sources": [
            {
                "kind": "rest",
                "name": "shop-rest",
                "vertical": "shop",
                "type": "product",
                "url": f"{url}/products",
                "auth": {"type": "bearer", "token": "${SHOP_TOKEN}"},
                "records_path": "data.items",
                "pagination": {"type": "page", "size": 10},
                "incremental": {"field": "updated_at", "param": "updated_since"},
                "source_id_field": "id",
                "name_field": "title",
                "schedule": 1,
            },
            {
                "kind": "graphql",
                "name": "shop-graphql",
                "vertical": "shop",
                "type": "listing",
                "url": f"{url}/graphql",
                "query": QUERY,
                "variables": {"first": 10},
                "nodes_path": "data.products.nodes",
                "page_info_path": "data.products.pageInfo",
                "incremental": {"field": "updatedAt", "param": "since"},
                "source_id_field": "id",
                "schedule": {"cron": "* * * * * *"},  # every second (6th field)
            },
        ]
    }


@pytest.mark.integration
def test_collect_runs_rest_and_graphql_on_their_schedule(
    kafka: KafkaSettings, services: Services, tmp_path: Path
) -> None:
    catalog = catalog_of(12)
    with pull_server() as server:
        serve_rest(server, catalog)
        serve_graphql(server, catalog)
        path = tmp_path / "collect.yaml"
        path.write_text(yaml.safe_dump(config(server.url)))
        services.env |= {
            "SHOP_TOKEN": TOKEN,
            "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "QANAT_OPS_PORT": str(ops_port := free_port()),
        }
        collect = services.start("collect", "collect", str(path))
        services.wait_http(f"http://127.0.0.1:{ops_port}/readyz")  # Kafka answers
        first = consume(kafka, kafka.topics.raw, expected=24, timeout=60, settle=0.2)
        assert len(first) == 24, services.log_tails()
        catalog.upsert("p13", "Product 13")  # the next scheduled polls of both find it
        landed = consume(kafka, kafka.topics.raw, expected=26, timeout=30, settle=1.5)
        services.check_alive()
        collect.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert collect.wait(30) == 0, services.log_tails()
        assert time.monotonic() - stopping < 15

    keys = sorted(m.key for m in landed if m.key)
    rest = [f"shop/product/p{n:02d}".encode() for n in range(1, 14)]
    graphql = [f"shop/listing/p{n:02d}".encode() for n in range(1, 14)]
    assert keys == sorted(rest + graphql)  # each once: later polls asked only for changes
    sources = {m.headers["qanat.type"]: m.headers["qanat.source"] for m in landed}
    assert sources == {"product": "rest", "listing": "graphql"}
    updated_since = [r.query.get("updated_since") for r in server.seen("/products")]
    assert updated_since[0] is None and updated_since[-1] == catalog.products["p13"]["updated_at"]


def test_every_config_error_is_reported_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    broken = config("http://127.0.0.1:9")
    sources = broken["sources"]
    assert isinstance(sources, list)
    sources[0]["auth"] = {"type": "bearer", "token": "${MISSING_TOKEN}"}
    sources[0]["pagination"] = {"type": "cursor"}
    sources[0]["vertical"] = "Shop"
    del sources[1]["url"]
    sources[1]["name"] = "shop-rest"
    sources.append({"kind": "ftp", "name": "x"})
    sources.append(
        {
            "kind": "rest",
            "name": "other",
            "vertical": "a",
            "type": "b",
            "url": "http://x",
            "auth": {"type": "basic", "username": "u"},
            "schedule": "every day",
        }
    )
    path = tmp_path / "collect.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = CliRunner().invoke(app, ["collect", str(path)])
    assert result.exit_code == 1
    expected = [
        "sources[0].auth.token: environment variable MISSING_TOKEN is not set",
        "sources[0].vertical: Value error, vertical 'Shop' must match",
        "sources[0].pagination.cursor_path: Field required",
        "sources[1].url: Field required",
        "sources[2].kind: unknown kind 'ftp'",
        "sources[3].auth.password: Field required",
        "sources[3].schedule.cron: Value error, 'every day' is not a valid cron expression",
    ]
    for line in expected:
        assert line in result.output, result.output


def test_check_lists_the_sources_and_duplicate_names_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "collect.yaml"
    path.write_text(yaml.safe_dump(config("http://127.0.0.1:9")))
    result = CliRunner().invoke(app, ["collect", str(path), "--check"], env={"SHOP_TOKEN": "t"})
    assert result.exit_code == 0, result.output
    assert "shop-rest: rest every 1.0s" in result.output
    twice = config("http://127.0.0.1:9")
    sources = twice["sources"]
    assert isinstance(sources, list)
    sources[1]["name"] = "shop-rest"
    path.write_text(yaml.safe_dump(twice))
    result = CliRunner().invoke(app, ["collect", str(path)], env={"SHOP_TOKEN": "t"})
    assert result.exit_code == 1
    assert "sources[1].name: 'shop-rest' is sources[0]'s" in result.output
