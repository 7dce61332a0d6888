"""How ``qanat import`` stops on Ctrl-C or SIGTERM without losing its place.

A signal handler that raises KeyboardInterrupt raises it wherever the main thread happens
to be, and that can be inside confluent-kafka's C code converting a record's headers
(``PyObject_Str``), which turns it into ``TypeError: expected header key to be unicode
string``: the import crashed instead of checkpointing. So the handlers of
:func:`stop_on_signals` only set a flag, :class:`StopFlag`; the publishing loops look at
it at safe points (every :meth:`sources.files.run.Run.mark`, while waiting for room in
the producer's queue, and when the records run out) and raise :class:`Interrupted` there,
a KeyboardInterrupt the importer answers by flushing and checkpointing.

>>> stop = StopFlag()
>>> stop.check()  # nothing requested: goes on
>>> stop(2, None)  # what SIGINT's handler does
>>> stop.requested, stop.signum
(True, 2)

(``stop.check()`` would now raise :class:`Interrupted`.)
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The import was asked to stop; raised by its loops at a point where that is safe."""


class StopFlag:
    """Set by a signal (it is the handler); checked by the import's loops."""

    __slots__ = ("signum",)

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested."""
        if self.signum:
            raise Interrupted(f"signal {self.signum}")


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """SIGINT and SIGTERM set the flag it yields (instead of raising) until it exits,
    when the previous handlers are restored."""
    stop = StopFlag()
    previous = {signum: signal.signal(signum, stop) for signum in SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
