"""Signed webhooks: ``POST /api/v1/webhooks/ingest/{vertical}/{type}``.

The body is one record object or a JSON array of them (many events, one ingestion id).
The sender proves it knows the vertical's secret (``webhook_secrets[vertical]``, else the
global ``webhook_secret``) with an HMAC of the raw body, in one of two schemes, chosen per
vertical (``webhook_schemes``):

- ``sha256`` (default): ``X-Webhook-Signature: sha256=<hex HMAC-SHA256>``;
- ``segment``: Segment-style ``X-Signature: <hex HMAC-SHA1>``.

A signature covers ``b"<timestamp>." + body``, the timestamp (unix seconds) sent in
``X-Webhook-Timestamp``, which must be within ``webhook_tolerance_s`` of now, so a captured
request cannot be replayed later. Without the header the signature would cover the body
alone and could be replayed for ever: it is refused (401 ``missing_timestamp``) unless
``webhook_require_timestamp`` is false (``QANAT_HTTP_WEBHOOK_REQUIRE_TIMESTAMP=false``,
for senders such as Segment that cannot sign a timestamp). Signatures are compared in
constant time. Every refusal is a 401 saying why. The vertical is checked first (exactly
an identifier: ``shop%0A`` is a 400, never verified with the global secret).

Webhook routes do not take API keys: the signature is their authentication (a webhook
sender such as Segment or GitHub can sign but cannot send a bearer token). Unsigned
webhooks are accepted only for a vertical without a secret, and only when
``webhook_allow_unsigned`` says so (development).

>>> body, secret = b'{"name": "a"}', "s3cret"
>>> header = "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()
>>> check_signature(WebhookPolicy(secret, "sha256", False), {"x-webhook-signature": header}, body)
>>> parse_webhook_body(b'[{"a": "],["}, {"b": [1, 2]} ]', 10)[0]
[b'{"a": "],["}', b'{"b": [1, 2]}']
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, Field, SecretStr, field_validator

from pipelines.core.records import check_identifier
from sources.http.body import (
    Records,
    checked_records,
    invalid_json,
    keys_of,
    parse_json,
    too_deep_to_decode,
)
from sources.http.errors import ApiError
from sources.http.jsoncheck import split_array

_ANY = msgspec.json.Decoder(msgspec.Raw)

SCHEMES = ("sha256", "segment")
SIGNATURE_HEADERS = {"sha256": "x-webhook-signature", "segment": "x-signature"}
TIMESTAMP_HEADER = "x-webhook-timestamp"


class WebhookSettings(BaseModel):
    """How the webhook route verifies its senders: a part of
    :class:`sources.http.app.HttpSourceSettings` (QANAT_HTTP_WEBHOOK_...)."""

    webhook_secret: SecretStr | None = Field(
        None, description="HMAC secret of webhooks of every vertical without its own secret."
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HMAC secret of webhooks per vertical (JSON object in the environment).",
        examples=[{"shop": "s3cret"}],
    )
    webhook_schemes: dict[str, Literal["sha256", "segment"]] = Field(
        default_factory=dict,
        description="Signature scheme per vertical, default sha256 (X-Webhook-Signature: "
        "sha256=<hex HMAC-SHA256>); segment: X-Signature: <hex HMAC-SHA1>.",
        examples=[{"analytics": "segment"}],
    )
    webhook_require_timestamp: bool = Field(
        True,
        description="Refuse a signed webhook without X-Webhook-Timestamp (401 "
        "missing_timestamp): the timestamp is signed with the body and checked against "
        "webhook_tolerance_s, so a captured request cannot be replayed later. false: also "
        "take a signature of the body alone, which can be replayed for ever (senders that "
        "cannot sign a timestamp, such as Segment).",
    )
    webhook_tolerance_s: float = Field(
        300.0, gt=0, description="Largest accepted age (or skew) of a webhook's timestamp."
    )
    webhook_allow_unsigned: bool = Field(
        False,
        description="Accept unsigned webhooks for verticals without a secret (development); "
        "else they are refused with a 401.",
    )

    @field_validator("webhook_secrets", "webhook_schemes")
    @classmethod
    def _verticals(cls, value: dict[str, Any]) -> dict[str, Any]:
        for vertical in value:
            check_identifier("vertical", vertical)  # "shop\n" would match no request
        return value

    def webhook_policy(self, vertical: str) -> WebhookPolicy | None:
        """How ``vertical``'s webhooks are verified; None: they are all refused.
        ValueError for a name that is no vertical (it gets no secret, not even the
        global one)."""
        check_identifier("vertical", vertical)
        secret = self.webhook_secrets.get(vertical) or self.webhook_secret
        if secret is None:
            return WebhookPolicy(None, "sha256") if self.webhook_allow_unsigned else None
        return WebhookPolicy(
            secret.get_secret_value(),
            self.webhook_schemes.get(vertical, "sha256"),
            self.webhook_require_timestamp,
            self.webhook_tolerance_s,
        )


@dataclass(frozen=True)
class WebhookPolicy:
    """How one vertical's webhooks are verified. ``secret`` None: unsigned are allowed."""

    secret: str | None
    scheme: str
    require_timestamp: bool = True
    tolerance_s: float = 300.0


def _refuse(code: str, message: str, location: str | None) -> ApiError:
    return ApiError(401, code, message, location)


def _timestamp(headers: Mapping[str, str], policy: WebhookPolicy, now: float) -> str | None:
    """The signed timestamp, checked against the tolerance window, or None."""
    location = f"header.{TIMESTAMP_HEADER}"
    value = headers.get(TIMESTAMP_HEADER)
    if value is None:
        if policy.require_timestamp:
            raise _refuse(
                "missing_timestamp",
                f"missing {TIMESTAMP_HEADER} header: a signature without a timestamp could be "
                'replayed; sign "<unix seconds>." + body and send the seconds in it',
                location,
            )
        return None
    value = value.strip()
    try:
        stamp = int(value)
    except ValueError:
        raise _refuse(
            "invalid_timestamp", "the timestamp must be unix seconds (an integer)", location
        ) from None
    if abs(now - stamp) > policy.tolerance_s:
        raise _refuse(
            "timestamp_outside_tolerance",
            f"timestamp outside tolerance ({policy.tolerance_s:g} s of the server's clock)",
            location,
        )
    return value


@dataclass(frozen=True)
class Signature:
    """A request's claimed signature: what :meth:`verify` checks the body against."""

    policy: WebhookPolicy
    given: str
    stamp: str | None
    location: str

    def verify(self, body: bytes) -> None:
        """Return if the signature matches ``body``; a 401 :class:`ApiError` otherwise."""
        secret = self.policy.secret or ""
        signed = body if self.stamp is None else f"{self.stamp}.".encode() + body
        if self.policy.scheme == "sha256":
            scheme, _, hexdigest = self.given.strip().partition("=")
            if scheme.lower() != "sha256" or not hexdigest:
                raise _refuse(
                    "unknown_signature_scheme",
                    f"unknown signature scheme {scheme!r}: expected sha256=<hex>",
                    self.location,
                )
            digest = hashlib.sha256
        else:
            hexdigest, digest = self.given.strip(), hashlib.sha1
        expected = hmac.new(secret.encode(), signed, digest).hexdigest()
        if not hmac.compare_digest(expected.encode(), hexdigest.lower().encode()):
            message = "bad signature: it does not match the body"
            raise _refuse("bad_signature", message, self.location)


def claimed_signature(
    policy: WebhookPolicy, headers: Mapping[str, str], now: float | None = None
) -> Signature | None:
    """The signature the headers claim (None: ``policy`` takes unsigned webhooks), checked
    before the body is read: a 401 :class:`ApiError` when it is missing or its timestamp
    is outside the window. ``headers`` are looked up by lower-case name."""
    if policy.secret is None:
        return None
    if policy.scheme not in SCHEMES:
        raise _refuse(
            "unknown_signature_scheme",
            f"unknown signature scheme {policy.scheme!r} configured for this webhook",
            None,
        )
    header = SIGNATURE_HEADERS[policy.scheme]
    location = f"header.{header}"
    given = headers.get(header)
    if not given:
        raise _refuse("missing_signature", f"missing signature: no {header} header", location)
    stamp = _timestamp(headers, policy, time.time() if now is None else now)
    return Signature(policy, given, stamp, location)


def check_signature(
    policy: WebhookPolicy, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> None:
    """Return if ``body`` is signed as ``policy`` demands; raise a 401 :class:`ApiError`
    saying why not. ``headers`` are looked up by lower-case name."""
    signature = claimed_signature(policy, headers, now)
    if signature is not None:
        signature.verify(body)


def no_secret_error() -> ApiError:
    return _refuse(
        "no_webhook_secret",
        "no webhook secret configured for this vertical, and unsigned webhooks are not allowed",
        None,
    )


def parse_webhook_body(body: bytes, max_records: int) -> Records:
    """The records of a webhook body (an object, or an array of objects): the exact bytes
    and the key fields of each; 400/413/422 :class:`ApiError` otherwise (400 too for a
    record no consumer could decode, :mod:`sources.http.values`, nested too deep or with
    a key twice, :mod:`sources.http.jsoncheck`)."""
    start = body.lstrip()[:1]
    try:
        _ANY.decode(body)  # valid JSON?
    except msgspec.DecodeError as exc:
        raise invalid_json(exc) from None
    except RecursionError:
        raise too_deep_to_decode(body, 1 if start == b"[" else 0) from None
    if start == b"{":
        return Records([body.strip()], [keys_of(parse_json(body))], None)
    if start != b"[":
        raise ApiError(422, "invalid_body", "expected an object or an array of objects", "body")
    values = split_array(body.strip(), max_records, "body")
    records = checked_records(body, values, "body", 1, None)
    for index, record_key in enumerate(records.keys):
        if record_key is None:
            raise ApiError(422, "invalid_record", "expected an object", f"body.{index}")
    return records
