"""schemathesis over the ingest API's OpenAPI spec, against a live service on the real broker.

The service runs under uvicorn on loopback (``tests.sources.http_server.serve``) so every
generated request goes through a real socket, the app's lifespan (topics, producer) included.
Checks: no 5xx (``not_a_server_error``); the response's status code, content type, headers
(``Retry-After`` on a 429 or 503) and body conform to the spec: every route documents its
202 body and its 4xx errors with the error body of ``sources.http.errors``. Bounded: few
examples per operation, a timeout per request, no Hypothesis database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipelines.core.config import KafkaSettings
from sources.http.app import create_app
from sources.http.settings import HttpSourceSettings
from tests.sources.http_server import serve

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 40
REQUEST_TIMEOUT_S = 15.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# The NDJSON stream's body is a string in the spec: send it as the raw text it is.
schemathesis.serializer.alias(["application/x-ndjson", "application/jsonl"], "text/plain")


# The spec does not depend on the broker: load it from an app that is never started.
schema = schemathesis.openapi.from_dict(
    create_app(KafkaSettings(), HttpSourceSettings(auth="none")).openapi()
)


@pytest.fixture
def base_url(kafka: KafkaSettings) -> Iterator[str]:
    """A live service (auth none) on the real broker."""
    with serve(create_app(kafka, HttpSourceSettings(auth="none"))) as url:
        yield url


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_conforming_responses(case: Any, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)
