"""Where the local broker's jars come from: ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, resolved by Maven from Maven Central into a cache directory.

:func:`fetch_kafka_libs` writes a one-dependency POM, has ``mvn dependency:copy-dependencies``
copy the runtime jars (plus ``log4j-slf4j-impl`` matching the resolved log4j, which the
published POM leaves out) and marks the directory complete; once complete it is reused
without asking Maven again. :class:`pipelines.devbroker.LocalBroker` runs the broker from it.
A missing tool or a failed fetch is a :class:`DevBrokerError` of one line.

>>> try:
...     require_tool("qanat-no-such-tool", "install it")
... except DevBrokerError as exc:
...     print(exc)
qanat-no-such-tool not found on PATH: install it
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from pipelines.core.errors import FatalError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.0"
SCALA_VERSION = "2.13"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qanat"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.qanat</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


class DevBrokerError(FatalError):
    """The local broker could not be fetched, started or stopped; the message says why."""


def require_tool(tool: str, hint: str) -> str:
    """The path of ``tool`` on PATH; DevBrokerError with ``hint`` when it is missing."""
    path = shutil.which(tool)
    if path is None:
        raise DevBrokerError(f"{tool} not found on PATH: {hint}")
    return path


def fetch_kafka_libs(version: str = KAFKA_VERSION, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Resolve kafka_2.13 and its runtime dependencies with Maven; return the libs dir."""
    home = cache_dir / f"kafka-{SCALA_VERSION}-{version}"
    libs = home / "libs"
    if (home / ".complete").exists():
        return libs
    mvn = require_tool("mvn", "install Maven (Debian: apt-get install maven) to fetch Kafka")
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_POM.format(scala=SCALA_VERSION, version=version))
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _mvn(
        mvn,
        home,
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    )
    # The published POM leaves out the SLF4J binding; match the log4j it resolved.
    log4j = sorted(staging.glob("log4j-api-*.jar"))
    if not log4j:
        raise DevBrokerError(f"Maven resolved no log4j-api for Kafka {version}")
    log4j_version = log4j[-1].name.removeprefix("log4j-api-").removesuffix(".jar")
    _mvn(
        mvn,
        home,
        "dependency:copy",
        f"-Dartifact=org.apache.logging.log4j:log4j-slf4j-impl:{log4j_version}",
        f"-DoutputDirectory={staging}",
    )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (home / ".complete").write_text(version)
    return libs


def _mvn(mvn: str, cwd: Path, *args: str) -> None:
    command = [mvn, "-B", "-q", *args]
    logger.info("fetching Kafka jars: %s", " ".join(command))
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        reason = lines[0] if lines else f"mvn exited {result.returncode}"
        raise DevBrokerError(f"fetching Kafka {KAFKA_VERSION} from Maven Central failed: {reason}")
