"""The CSV fast path of ``qanat import``: one tight loop from the csv module's rows to the
producer, with the per-record work cut to what each record needs of its own.

Per row: the csv module's C reader gives its cells as a list; the column mapping and casts,
compiled once for the header (:meth:`sources.files.mapping.RecordShaper.row_builder`), make
the record object; orjson serializes it; the key is the record's own ``source_id`` when it
has a usable one (the common case, checked inline), else what
:meth:`sources.files.source.FileImporter.source_key` gives (as in the general loop). The
headers other than the event id are shared tuples, and everything else (polling the
producer, sealing delivery chunks, checkpoints, progress, a requested stop) happens every
``POLL_EVERY`` records in :meth:`sources.files.run.Run.mark`.

It publishes what the general loop of :mod:`sources.files.source` publishes for the same CSV (the
same keys and headers, values equal as JSON; ``tests/sources/files/test_csvfast.py`` checks it,
and that the bytes and keys are those of qanat before this path), so a file imported by
either is upserted as the same records.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

import orjson

from pipelines.core.records import MAX_SOURCE_ID_LENGTH
from pipelines.core.topics import H_EVENT_ID
from sources.files.mapping import RowBuilder
from sources.files.readers import CsvReader, Row
from sources.files.run import POLL_EVERY, Run

SourceKey = Callable[[dict[str, Any], int], str]


def publish_csv(
    run: Run, reader: CsvReader, build: RowBuilder, source_key: SourceKey, max_bytes: int
) -> None:
    """Publish every record of ``reader`` after its start (see the module's docstring);
    ``source_key(obj, number)`` keys a record without a usable ``source_id`` of its own.

    One long function on purpose: its locals are the fastest variables Python has, and a
    call per record would cost as much as some of the steps."""
    rows = reader.resume()
    report, delivery = run.report, run.delivery
    produce, topic, key_prefix = delivery.producer.produce, run.topic, run.key_prefix
    h0, h1, h2, h3 = run.head
    t0, t1 = run.tail()
    event_ids = run.event_ids
    id_format, id_prefix, id_count = event_ids.FORMAT, event_ids.prefix, event_ids.count
    width, dumps = len(reader.header), orjson.dumps
    number = done = reader.skipped
    read, produced, line = report.read, report.produced, rows.line_num
    mark_at = read + POLL_EVERY
    chunk = delivery.chunk
    sid: Any = None
    more = True
    try:
        while more:  # the for loop again after a row the csv module could not read
            try:
                for cells in rows:
                    if not cells:  # a blank line
                        line = rows.line_num
                        continue
                    number += 1
                    read += 1
                    problem = value = None
                    if len(cells) != width:
                        problem = f"expected {width} cells (as in the header), got {len(cells)}"
                    else:
                        obj = build(cells)
                        sid = obj.get("source_id")
                        if sid.__class__ is not str or not 0 < len(sid) <= MAX_SOURCE_ID_LENGTH:
                            sid = source_key(obj, number)
                        try:
                            value = dumps(obj)
                        except (TypeError, UnicodeError) as exc:  # e.g. invalid UTF-8
                            problem = f"cannot be serialized as JSON: {exc}"
                    if value is not None and len(value) <= max_bytes:
                        id_count += 1
                        event_id = (H_EVENT_ID, id_format % (id_prefix, id_count))
                        headers = [h0, h1, h2, h3, event_id, t0, t1]
                        key = (key_prefix + sid).encode()
                        try:
                            produce(topic, value, key, headers=headers, on_delivery=chunk)
                            chunk.pending += 1
                        except BufferError:  # the local queue is full: wait for room
                            delivery.produce(topic, value, key, headers)
                        produced += 1
                    else:
                        problem = problem or f"the record is over {max_bytes} bytes"
                        report.reject(Row(number, line + 1, None, None), problem)
                    done, line = number, rows.line_num
                    if read >= mark_at:
                        mark_at = read + POLL_EVERY
                        chunk = run.mark(Row(done, line, None, None), reader.offset, read, produced)
                        t0, t1 = run.tail()
                more = False
            except csv.Error as exc:  # e.g. a cell over the field size limit
                number += 1
                read += 1
                report.reject(Row(number, line + 1, None, None), f"unreadable CSV row: {exc}")
                done, line = number, rows.line_num
    finally:
        event_ids.count = id_count
        report.read, report.produced = read, produced
        run.saver.row = Row(done, line, None, None) if done else None
