"""What makes ``qanat import`` resumable and its keys stable: the file's fingerprint, the
checkpoint file, and cheap unique event ids."""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

import orjson

from pipelines.core.records import now
from sources.files.readers import Position

logger = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1 << 20


def fingerprint(path: Path) -> str:
    """A file id from its size and its first and last MiB: the same file (at any path)
    gives the same id, a changed one most likely not."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:20]


class EventIds:
    """Unique event ids, cheaply: a random version-4 UUID whose last 48 bits count up.

    The count starts below 2**47, so it never wraps within one import (no mask per
    record); ``FORMAT % (prefix, count)`` is the id as bytes, the cheapest way to make it.

    >>> ids = EventIds()
    >>> first, second = ids.next(), ids.next()
    >>> len(first), first[14:15], first[:24] == second[:24], first != second
    (36, b'4', True, True)
    """

    FORMAT = b"%s%012x"

    def __init__(self) -> None:
        text = str(uuid.uuid4())
        self.prefix = text[:24].encode()
        self.count = int(text[24:], 16) >> 1

    def next(self) -> bytes:
        self.count += 1
        return self.FORMAT % (self.prefix, self.count)


class Checkpoint:
    """The state file of one file's import: where a re-run resumes (written atomically)."""

    def __init__(self, directory: Path, file_id: str, digest: str) -> None:
        self.path = directory / f"{file_id}.json"
        self.digest = digest

    def load(self) -> tuple[str, Position, int] | None:
        """(ingestion id, position, records produced) of an unfinished import with the same
        settings, else None."""
        try:
            state = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable checkpoint %s: %s", self.path, exc)
            return None
        if state.get("settings") != self.digest:
            logger.warning("%s was written with other settings: starting over", self.path)
            return None
        position = Position(state["number"], state["line"], state["offset"])
        return state["ingestion_id"], position, int(state["produced"])

    def save(self, ingestion_id: str, position: Position, produced: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "ingestion_id": ingestion_id,
            "settings": self.digest,
            "number": position.number,
            "line": position.line,
            "offset": position.offset,
            "produced": produced,
            "saved_at": now(),
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(state))
        temporary.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
