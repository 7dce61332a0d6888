"""scripts/test.sh stops the servers it started, and only those, however it ends; the
``status``/``stop`` verbs of scripts/mosquitto-local.sh on a broker of the test's own (free
port, temporary directory; the shared broker is never touched)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.devbroker import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("postgres-local", "mosquitto-local", "mariadb-local", "neo4j-local")

# A *-local.sh stand-in: logs its verb; "up" while a file named after it exists.
STUB_SERVER = """#!/usr/bin/env bash
name=$(basename "$0" .sh)
echo "$name ${1:-start}" >>"$STUB_LOG"
case ${1:-start} in
    status) [[ -f $STUB_UP/$name ]] ;;
    stop) rm -f "$STUB_UP/$name" ;;
    start) touch "$STUB_UP/$name"; echo "addr://$name" ;;
esac
"""
# With STUB_PYTEST_SLEEP it becomes a Python process that marks itself up and sleeps, as
# pytest would: the mark exists only once the process that Ctrl-C must stop is running
# (a shell that touched it and then forked ``sleep`` could take the signal mid-fork, and
# its ``sleep`` outlive it).
STUB_PYTEST = """#!/usr/bin/env bash
echo "pytest mqtt=$QANAT_TEST_MQTT_URL neo4j=$QANAT_TEST_NEO4J_URL" >>"$STUB_LOG"
[[ -z ${STUB_PYTEST_SLEEP:-} ]] || exec python3 -c '
import pathlib, sys, time
pathlib.Path(sys.argv[1]).touch()
time.sleep(float(sys.argv[2]))
' "$STUB_UP/pytest" "$STUB_PYTEST_SLEEP"
exit "${STUB_PYTEST_RC:-0}"
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of scripts/test.sh among stand-ins for everything it runs."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "test.sh", repo / "scripts" / "test.sh")
    _executable(repo / "scripts" / "bootstrap.sh", "#!/usr/bin/env bash\n")
    for name in SERVERS:
        _executable(repo / "scripts" / f"{name}.sh", STUB_SERVER)
    for tool in ("ruff", "mypy"):
        _executable(repo / ".venv" / "bin" / tool, 'exit "${STUB_CHECK_RC:-0}"\n')
    _executable(repo / ".venv" / "bin" / "pytest", STUB_PYTEST)
    _executable(tmp_path / "bin" / "docker", "exit 1\n")  # no Docker engine answers
    (tmp_path / "up").mkdir()
    return repo


def _env(checkout: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QANAT_", "STUB_"))}
    env["PATH"] = f"{checkout.parent / 'bin'}:{env['PATH']}"
    env["STUB_LOG"] = str(checkout.parent / "log")
    env["STUB_UP"] = str(checkout.parent / "up")
    return env | extra


def _log(checkout: Path) -> list[str]:
    return (checkout.parent / "log").read_text().splitlines()


def _run(checkout: Path, **extra: str) -> int:
    script = checkout / "scripts" / "test.sh"
    env = _env(checkout, **extra)
    return subprocess.run(["bash", str(script)], env=env, check=False).returncode


def test_stops_what_it_started_in_reverse_order_and_keeps_the_exit_code(checkout: Path) -> None:
    assert _run(checkout, STUB_PYTEST_RC="3") == 3
    log = _log(checkout)
    starts = [line for line in log if line.endswith(" start")]
    assert starts == [f"{name} start" for name in SERVERS]
    assert "pytest mqtt=addr://mosquitto-local neo4j=addr://neo4j-local" in log
    after = log[log.index(next(line for line in log if line.startswith("pytest"))) + 1 :]
    assert after == [f"{name} stop" for name in reversed(SERVERS)]
    assert not any((checkout.parent / "up").iterdir())


def test_leaves_running_servers_and_named_ones_alone(checkout: Path) -> None:
    (checkout.parent / "up" / "mariadb-local").touch()  # answered before test.sh
    assert _run(checkout, QANAT_TEST_MQTT_URL="mqtt://elsewhere") == 0
    log = _log(checkout)
    assert not any(line.startswith("mosquitto-local") for line in log)
    assert "mariadb-local start" in log and "mariadb-local stop" not in log
    assert "postgres-local stop" in log and "neo4j-local stop" in log
    assert [p.name for p in (checkout.parent / "up").iterdir()] == ["mariadb-local"]


def test_a_failed_check_stops_them_too(checkout: Path) -> None:
    assert _run(checkout, STUB_CHECK_RC="1") == 1
    assert not any(line.startswith("pytest") for line in _log(checkout))
    assert not any((checkout.parent / "up").iterdir())


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_pytest_stops_them(checkout: Path) -> None:
    script = checkout / "scripts" / "test.sh"
    env = _env(checkout, STUB_PYTEST_SLEEP="30")
    # SIGINT as a terminal leaves it: a suite started as a background job (``cmd &`` without
    # job control) inherits it ignored, and bash cannot trap a signal ignored on entry.
    with subprocess.Popen(
        ["bash", str(script)], env=env, start_new_session=True, preexec_fn=_default_sigint
    ) as proc:
        deadline = time.monotonic() + 20
        while not (checkout.parent / "up" / "pytest").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
        assert proc.wait(timeout=20) == 130
    assert _log(checkout)[-4:] == [f"{name} stop" for name in reversed(SERVERS)]
    assert [p.name for p in (checkout.parent / "up").iterdir()] == ["pytest"]


def _mosquitto(verb: str, port: int, directory: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"QANAT_MOSQUITTO_PORT": str(port), "QANAT_MOSQUITTO_DIR": str(directory)}
    script = ROOT / "scripts" / "mosquitto-local.sh"
    return subprocess.run(
        ["bash", str(script), verb], env=env, capture_output=True, text=True, timeout=60
    )


def test_mosquitto_start_status_stop(tmp_path: Path) -> None:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").is_file()):
        pytest.skip("no mosquitto: scripts/mosquitto-local.sh installs it (as root)")
    port, ours, other = free_port(), tmp_path / "ours", tmp_path / "other"
    assert _mosquitto("status", port, ours).returncode == 1
    try:
        started = _mosquitto("start", port, ours)
        assert started.returncode == 0, started.stderr
        assert started.stdout == f"mqtt://127.0.0.1:{port}\n"
        assert _mosquitto("status", port, ours).returncode == 0
        # Another directory's stop leaves the broker that answers on the port alone.
        assert _mosquitto("stop", port, other).returncode == 0
        assert _mosquitto("status", port, ours).returncode == 0
    finally:
        stopped = _mosquitto("stop", port, ours)
    assert stopped.returncode == 0, stopped.stderr
    assert _mosquitto("status", port, ours).returncode == 1
    assert not (ours / "mosquitto.pid").exists()
    assert _mosquitto("stop", port, ours).returncode == 0  # nothing left to stop: still 0
