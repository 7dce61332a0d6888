"""Which ports ``qanat up`` takes: none fixed, so that a second one (another data
directory) and the test suite run beside it; a port asked for must be free."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.cli import up
from pipelines.core.errors import FatalError
from pipelines.core.ports import free_port
from pipelines.devbroker import LocalBroker


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something listens on (a free one, taken for the test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_asked_for_must_be_free(taken: int) -> None:
    port = free_port()
    assert up.choose_port(port, [taken], what="x", option="--x-port") == port
    with pytest.raises(FatalError, match=f"x: port {taken} on 127.0.0.1 is taken.*--x-port"):
        up.choose_port(taken, [], what="x", option="--x-port")


def test_else_the_preferred_port_when_free_else_a_free_one(taken: int) -> None:
    preferred = free_port()
    assert up.choose_port(None, [None, taken, preferred], what="x", option="") == preferred
    assert up.choose_port(0, [preferred], what="x", option="") == preferred  # 0: not asked
    assert up.choose_port(None, [taken], what="x", option="") not in (taken, 0)


def test_the_broker_keeps_its_data_directory_s_port_else_moves(
    tmp_path: Path, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up, "DEFAULT_BROKER_PORT", taken)  # 9092 held by another qanat up
    fresh = up.local_broker(tmp_path / "broker", None)
    assert fresh.port != taken
    recorded = free_port()
    (tmp_path / "broker").mkdir()
    LocalBroker(tmp_path / "broker", port=recorded)._write_config()
    assert up.local_broker(tmp_path / "broker", None).port == recorded
    LocalBroker(tmp_path / "broker", port=taken)._write_config()  # its old port is taken now
    assert up.local_broker(tmp_path / "broker", None).port not in (taken, 0)
    with pytest.raises(FatalError, match="--broker-port / QANAT_DEV_BROKER_PORT"):
        up.local_broker(tmp_path / "broker", taken)


def test_each_consuming_service_gets_a_free_ops_port_of_its_own() -> None:
    services = up.local_services({}, mqtt=True)
    ports = {s.name: s.env.get("QANAT_OPS_PORT") for s in services}
    assert ports.pop("source-http") is None  # serves them on its own HTTP port
    assert set(ports) == {"transform", "sink-sqlite", "sink-errors", "source-mqtt"}
    assert len(set(ports.values())) == 4 and not {"9101", "9102", "9104", "9105"} & set(
        ports.values()
    )
    assert all(s.env.get("QANAT_OPS_HOST", "127.0.0.1") == "127.0.0.1" for s in services)
    quiet = up.local_services({"QANAT_OPS_PORT": "0"}, mqtt=False)
    assert [s.name for s in quiet] == ["source-http", "transform", "sink-sqlite", "sink-errors"]
    assert all(s.ops_url is None and s.ready_url is None for s in quiet)
