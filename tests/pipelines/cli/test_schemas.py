"""``qanat schemas register|list|show`` against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipelines.cli.main import app
from pipelines.core.config import KafkaSettings

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "required": ["price"]}


def test_register_list_show(kafka: KafkaSettings, tmp_path: Path) -> None:
    env = {
        "QANAT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "QANAT_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "QANAT_LOG_LEVEL": "WARNING",
    }
    runner = CliRunner()
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(orjson.dumps(SCHEMA))
    bad.write_text('{"type": "no-such", "required": "name"}')

    def qanat(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.stdout, result.stderr

    register = ("schemas", "register", str(good), "--vertical", "shop", "--type", "product")
    assert qanat(*register)[:2] == (0, "1\n")
    assert qanat(*register)[:2] == (0, "1\n")  # unchanged: same version

    code, _out, err = qanat("schemas", "register", str(bad), "--vertical", "shop", "--type", "x")
    assert code == 1
    assert "$.required: 'name' is not of type 'array'" in err
    assert "$.type: " in err

    code, out, _err = qanat("schemas", "list")
    assert code == 0
    listed = [orjson.loads(line) for line in out.splitlines()]
    assert [(s["vertical"], s["type"], s["version"]) for s in listed] == [("shop", "product", 1)]

    code, out, _err = qanat("schemas", "show", "shop", "product")
    assert code == 0
    shown = orjson.loads(out)
    assert (shown["version"], shown["schema"]) == (1, SCHEMA)
    assert qanat("schemas", "show", "shop", "product", "--version", "1")[1] == out
    code, _out, err = qanat("schemas", "show", "shop", "product", "--version", "2")
    assert code == 1
    assert "no version 2" in err
