"""A seeded generator of hostile raw events (issue 16): deep nesting, huge numbers, NUL,
lone surrogates, invalid UTF-8, giant strings, odd types in every field, duplicate keys,
bad headers, mixed with plain records. Each event has a unique ``qanat.event_id`` header
(the accounting key) and, where it is an object, a unique ``seq`` (no two share a key).

>>> events = generate(7, 50)
>>> len(events), len({e.event_id for e in events})
(50, 50)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from pipelines.core.records import RawMeta
from pipelines.core.topics import H_TYPE, H_VERTICAL, Headers

VERTICAL, TYPE = "hostile", "thing"
RECEIVED_AT = "2026-01-01T00:00:00.000000Z"
ODD_VALUES: list[bytes] = [
    b"null",
    b"true",
    b"0",
    b"-0",
    b"1e308",
    b"-1e308",
    b"5e-324",
    b"123456789012345678901234567890",
    b"-9223372036854775809",
    b"18446744073709551616",
    b'""',
    b'"\\u0000"',
    b'"nul\\u0000inside"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\ud83d\\ude80"',
    b"[]",
    b"{}",
    b'[null, {"a": []}]',
    b'{"": {"": ""}}',
    b'"\xff\xfe"',
    b"NaN",
    b"Infinity",
    b'"' + b"z" * 5000 + b'"',
]
FIELDS = ("name", "source_id", "event_time", "vertical_data", "data", "id", "x\u0000y")


@dataclass(frozen=True)
class HostileEvent:
    event_id: str
    kind: str
    value: bytes | None
    headers: Headers


def _obj(seq: int, *members: tuple[bytes, bytes]) -> bytes:
    body = [b'"seq": %d' % seq] + [b'"' + k + b'": ' + v for k, v in members]
    return b"{" + b", ".join(body) + b"}"


def _plain(rng: random.Random, seq: int) -> bytes:
    return orjson.dumps({"name": f"plain {seq}", "source_id": f"p{seq}", "seq": seq})


def _deep(rng: random.Random, seq: int) -> bytes:
    depth = rng.choice([50, 120, 127, 129, 200, 500, 1100, 5000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a": ', b"}")])
    tail = b"null" if opener != b"[" else b""
    return _obj(seq, (b"name", b'"deep"'), (b"v", opener * depth + tail + closer * depth))


def _numbers(rng: random.Random, seq: int) -> bytes:
    count = rng.choice([10, 1000, 60_000, 110_000])  # the last outgrow the records topic
    number = rng.choice([b"9e15", b"1e308", b"-0.0", b"123456789012345678901234567890"])
    count = min(count, 900_000 // (len(number) + 1))  # the raw event fits the raw topic
    return _obj(seq, (b"name", b'"numbers"'), (b"v", b"[" + b",".join([number] * count) + b"]"))


def _odd_source_ids(seq: int) -> list[bytes]:
    """Odd source ids, unique wherever one could be a key (two events, one key: one row)."""
    return [
        b"%d" % seq,
        b"%d.5" % seq,
        b"-%d" % seq,
        b"%d.25e2" % seq,
        b"null",
        b"true",
        b"[%d]" % seq,
        b'{"a": %d}' % seq,
        b'"\\u0000%d"' % seq,
        b'"\\ud800%d"' % seq,
        b'"' + b"s" * 600 + b'%d"' % seq,
        b'"a/b %d\\n"' % seq,
        b'""',
    ]


def _odd_field(rng: random.Random, seq: int) -> bytes:
    field = rng.choice(FIELDS).encode("utf-8")
    name = [] if field == b"name" else [(b"name", b'"odd"')]
    odd = rng.choice(_odd_source_ids(seq) if field == b"source_id" else ODD_VALUES)
    return _obj(seq, *name, (field, odd))


def _nul_and_surrogates(rng: random.Random, seq: int) -> bytes:
    text = rng.choice([b"a\\u0000b", b"\\ud800", b"\\udc00x", b"ok\\u0000", b"\\u0000"])
    text += b"%d" % seq  # unique, as it may be a source id
    where = rng.choice([b"name", b"source_id", b"note", b"k\\u0000ey"])
    name = [] if where == b"name" else [(b"name", b'"nul"')]
    return _obj(seq, *name, (where, b'"' + text + b'"'))


def _giant_string(rng: random.Random, seq: int) -> bytes:
    size = rng.choice([1025, 10_000, 300_000, 900_000])
    where = rng.choice([b"name", b"blob"])
    name = [] if where == b"name" else [(b"name", b'"giant"')]
    return _obj(seq, *name, (where, b'"' + b"g" * size + b'"'))


def _duplicate_keys(rng: random.Random, seq: int) -> bytes:
    key = rng.choice([b"name", b"source_id", b"v"])
    first, second = b'"first %d"' % seq, b'"second %d"' % seq
    return _obj(seq, (b"name", b'"dup"'), (key, first), (key, second))


def _not_an_object(rng: random.Random, seq: int) -> bytes:
    return rng.choice([*ODD_VALUES, b"", b"{", b'{"name": "x",}', b"\xff\xfe\x00", b"[1, 2"])


def _bad_utf8(rng: random.Random, seq: int) -> bytes:
    return _obj(seq, (b"name", b'"caf\xe9"'), (b"\xc3\x28", b"1"))


KINDS: dict[str, Callable[[random.Random, int], bytes]] = {
    "plain": _plain,
    "deep": _deep,
    "numbers": _numbers,
    "odd field": _odd_field,
    "nul or surrogate": _nul_and_surrogates,
    "giant string": _giant_string,
    "duplicate keys": _duplicate_keys,
    "not an object": _not_an_object,
    "bad utf-8": _bad_utf8,
}
# Most events are small; the big kinds are rare, so a run stays quick.
WEIGHTS = {"plain": 30, "numbers": 2, "giant string": 2}


def _headers(rng: random.Random, event_id: str) -> Headers:
    headers = RawMeta(VERTICAL, TYPE, "hostile", "ing-hostile", event_id, RECEIVED_AT).headers()
    roll = rng.random()
    if roll < 0.03:  # a header missing, or not an identifier
        name = rng.choice([H_VERTICAL, H_TYPE])
        bad = rng.choice([None, b"", b"thing\n", b"\xff", b"a" * 300])
        headers = [(n, v) for n, v in headers if n != name]
        if bad is not None:
            headers.append((name, bad))
    return headers


def generate(seed: int, count: int) -> list[HostileEvent]:
    rng = random.Random(seed)
    kinds = list(KINDS)
    weights = [WEIGHTS.get(kind, 6) for kind in kinds]
    events = []
    for seq in range(count):
        kind = rng.choices(kinds, weights)[0]
        event_id = f"hostile-{seed}-{seq}"
        value: bytes | None = KINDS[kind](rng, seq)
        if kind == "not an object" and rng.random() < 0.1:
            value = None  # a tombstone on the raw topic
        events.append(HostileEvent(event_id, kind, value, _headers(rng, event_id)))
    return events
