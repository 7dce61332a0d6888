"""A local Mosquitto for ``qanat up``: a child process whose files all live in one directory.

It runs in the foreground (no ``-d``) in a session of its own, so the terminal's Ctrl-C
reaches only ``qanat up``, which stops it after the MQTT source. Its port (a free one, never
1883, which another broker may want) is kept in the directory, so devices find it again
after a restart (another free port when that one is taken); persistence is on, so QoS 1
sessions outlive a restart too. Its pid is kept there as well: one left running by a
``qanat up`` that was killed is stopped by the next start.

>>> broker = LocalMosquitto(Path(".qanat/mosquitto"))   # doctest: +SKIP
>>> broker.start()                                       # doctest: +SKIP
'mqtt://127.0.0.1:41883'
>>> broker.stop()                                        # doctest: +SKIP
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.errors import FatalError
from pipelines.core.ports import free_port, port_answers, port_is_free
from pipelines.devbroker import process_alive


def mosquitto_binary() -> str | None:
    """Mosquitto's broker binary (Debian puts it in /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").is_file():
        return "/usr/sbin/mosquitto"
    return found


@dataclass
class LocalMosquitto:
    """Mosquitto on 127.0.0.1, anonymous clients allowed (loopback only)."""

    directory: Path
    binary: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    port: int = field(default=0, init=False)

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while this object runs it."""
        return self._process.pid if self._process is not None else None

    @property
    def _config(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def _pid_file(self) -> Path:
        return self.directory / "mosquitto.pid"

    def _choose_port(self) -> int:
        stored = self.directory / "port"
        try:
            port = int(stored.read_text().strip())
        except (OSError, ValueError):
            port = 0
        if port and port_is_free(port):
            return port
        port = free_port()
        stored.write_text(str(port))
        return port

    def _stop_leftover(self) -> None:
        """Stop the broker of this directory that a killed ``qanat up`` left running."""
        try:
            pid = int(self._pid_file.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            self._pid_file.unlink(missing_ok=True)
            return
        if str(self._config).encode() in command:  # ours, not a reused pid
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self._pid_file.unlink(missing_ok=True)

    def _write_config(self) -> Path:
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by qanat up: its own broker, loopback only.",
            # as root, Mosquitto would switch to the user 'mosquitto', who cannot write here
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "persistence true",
            f"persistence_location {self.directory / 'data'}/",
            "autosave_interval 1",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
        ]
        self._config.write_text("\n".join(lines) + "\n")
        return self._config

    def start(self, timeout: float = 10.0) -> str:
        """Start it and wait until it accepts connections; its URL."""
        binary = self.binary or mosquitto_binary()
        if binary is None:
            raise FatalError("mosquitto not found (Debian: apt-get install mosquitto)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.port = self._choose_port()
        config = self._write_config()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file.write_text(str(self._process.pid))
        deadline = time.monotonic() + timeout
        while not port_answers(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise FatalError(f"mosquitto did not start on {self.url}: see {self.log_file}")
            time.sleep(0.1)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file), SIGKILL past ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._pid_file.unlink(missing_ok=True)
