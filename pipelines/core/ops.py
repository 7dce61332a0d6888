"""Operations endpoints of every qanat service: liveness, readiness, Prometheus metrics,
consumer lag, and a bounded graceful shutdown.

A Kafka-consuming service (transform, sinks) serves ``/healthz``, ``/readyz`` and
``/metrics`` on a small HTTP port of its own (``QANAT_OPS_PORT``, else a default per
service, or a free port when that one is taken; 0 disables) from a daemon thread; the
HTTP source includes :func:`ops_router` in its FastAPI app instead. ``/readyz`` answers
200 when every check passes (Kafka answers a metadata request and the service's topics
exist; a sink's store answers a ping), else 503 with a JSON reason. :func:`service_ops`
runs them for a service, with the consumer-lag gauges (what is asked of Kafka is in
:mod:`pipelines.core.ops_kafka`), and :func:`run_quix` makes a Quix application's SIGTERM
shutdown bounded.

>>> readiness = Readiness({"always": lambda: None})
>>> readiness.report()
(200, {'status': 'ready', 'checks': {'always': 'ok'}})
>>> server = OpsServer(readiness, host="127.0.0.1", port=0).start()   # doctest: +SKIP
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any, ClassVar, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pipelines.core.config import KafkaSettings, QanatSettings
from pipelines.core.errors import FatalError
from pipelines.core.ops_kafka import KafkaCheck, LagMonitor

logger = logging.getLogger(__name__)

Check = Callable[[], None]
"""A readiness check: returns when the dependency answers, raises saying why not."""

DEFAULT_PORTS = {
    "transform": 9101,
    "sink-sqlite": 9102,
    "sink-postgres": 9103,
    "sink-errors": 9104,
    "source-mqtt": 9105,
}
"""The ops port of each service when ``QANAT_OPS_PORT`` is not set (distinct, so that
they run side by side on one host); a service whose default is taken serves on a free port
instead and logs it (``qanat up`` gives each child a free port of its own)."""


class OpsSettings(QanatSettings):
    """Health, readiness, metrics and shutdown of every service."""

    yaml_section: ClassVar[str] = "ops"
    model_config = SettingsConfigDict(env_prefix="QANAT_OPS_", extra="forbid")

    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /healthz, /readyz and /metrics of a Kafka-consuming service "
        "(the HTTP source serves them on its own port). Unset: 9101 transform, 9102 SQLite "
        "sink, 9103 PostgreSQL sink, 9104 errors sink, 9105 MQTT source, or a free port "
        "(logged) when that one is taken; a port set here must be free. 0 disables.",
    )
    host: str = Field(
        "0.0.0.0",
        description="Address the ops port listens on.",
        examples=["0.0.0.0", "127.0.0.1"],
    )
    check_timeout_s: float = Field(
        2.0, gt=0, description="Timeout of each readiness check (Kafka metadata, store ping)."
    )
    lag_interval_s: float = Field(
        15.0, ge=0, description="Seconds between consumer-lag measurements; 0 disables them."
    )
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM a service stops intake, flushes and commits; past this many "
        "seconds it exits with status 1 (nothing more is committed).",
    )

    def port_for(self, service: str) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS.get(service, 0)


# --- readiness ---------------------------------------------------------------------


class Pingable(Protocol):
    def ping(self) -> None: ...


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class Readiness:
    """Named checks; :meth:`report` runs them all and says which failed."""

    def __init__(self, checks: Mapping[str, Check] | None = None) -> None:
        self.checks: dict[str, Check] = dict(checks or {})

    def report(self) -> tuple[int, dict[str, Any]]:
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = _reason(exc)
        failed = [f"{name}: {result}" for name, result in results.items() if result != "ok"]
        if failed:
            return 503, {"status": "not ready", "reason": "; ".join(failed), "checks": results}
        return 200, {"status": "ready", "checks": results}


def store_checks(stores: Iterable[Pingable]) -> dict[str, Check]:
    """One check per store (``store``, ``store-2``, ...): its ``ping()``."""
    checks: dict[str, Check] = {}
    for index, store in enumerate(stores):
        checks["store" if index == 0 else f"store-{index + 1}"] = store.ping
    return checks


# --- the HTTP endpoints --------------------------------------------------------------


def _json(status: int, body: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    reasons = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
    payload = orjson.dumps(body)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    return f"{status} {reasons.get(status, '')}".strip(), headers, payload


def _not_found(path: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "not_found",
            "message": f"no such endpoint: {path}",
            "location": "path",
            "details": [{"path": path, "message": "try /healthz, /readyz or /metrics"}],
        }
    }


def wsgi_app(readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the ops port: /healthz, /readyz, /metrics."""
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if path == "/healthz":
            status, headers, payload = _json(200, {"status": "ok"})
        elif path == "/readyz":
            status, headers, payload = _json(*readiness.report())
        else:
            status, headers, payload = _json(404, _not_found(path))
        start_response(status, headers)
        return [payload]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None  # probes every few seconds would drown the service's own lines


class OpsServer:
    """The ops endpoints on ``host:port`` (0: any free port), served by daemon threads.
    With ``fallback`` (the port is a default, not one asked for), a taken port gives way to
    a free one, logged."""

    def __init__(
        self, readiness: Readiness, host: str, port: int, *, fallback: bool = False
    ) -> None:
        self.readiness, self.host, self.requested_port = readiness, host, port
        self.fallback = fallback
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the ops server is not started")
        return int(self._server.server_address[1])

    def _bind(self, port: int) -> _Server:
        return make_server(
            self.host,
            port,
            wsgi_app(self.readiness),
            server_class=_Server,
            handler_class=_QuietHandler,
        )

    def start(self) -> OpsServer:
        try:
            try:
                self._server = self._bind(self.requested_port)
            except OSError as exc:
                if not (self.fallback and exc.errno == errno.EADDRINUSE):
                    raise
                self._server = self._bind(0)
                logger.warning(
                    "default ops port %d is taken: serving on %d instead "
                    "(QANAT_OPS_PORT chooses one)",
                    self.requested_port,
                    self.port,
                )
        except OSError as exc:
            raise FatalError(
                f"cannot serve /healthz, /readyz, /metrics on {self.host}:{self.requested_port}: "
                f"{exc.strerror or exc} (set QANAT_OPS_PORT to another port, 0 disables)"
            ) from None
        thread = threading.Thread(
            target=self._server.serve_forever, args=(0.5,), name="qanat-ops", daemon=True
        )
        thread.start()
        logger.info(
            "ops endpoints on http://%s:%d (/healthz /readyz /metrics)", self.host, self.port
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def ops_router(readiness: Readiness, skip: Iterable[str] = ()) -> Any:
    """The same endpoints as a FastAPI router, for a service that is an HTTP app already;
    ``skip`` names paths the app serves itself (e.g. its own ``/healthz``)."""
    from fastapi import APIRouter
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    skipped = set(skip)
    router = APIRouter(tags=["operations"])
    if "/healthz" not in skipped:

        @router.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

    if "/readyz" not in skipped:
        # Return types stay unannotated: with postponed annotations FastAPI would look the
        # locally imported response classes up in the module and fail to build /openapi.json.
        @router.get(
            "/readyz",
            response_model=None,
            responses={503: {"description": "not ready: the JSON body names what failed"}},
        )
        def readyz():  # type: ignore[no-untyped-def]  # sync: FastAPI runs it in a thread
            status, body = readiness.report()
            return JSONResponse(body, status_code=status)

    if "/metrics" not in skipped:

        @router.get("/metrics", response_model=None, response_class=Response)
        def metrics():  # type: ignore[no-untyped-def]
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def app_paths(app: Any) -> set[str]:
    """The paths a FastAPI app serves already (what :func:`ops_router` should skip)."""
    return {getattr(route, "path", "") for route in app.routes}


# --- a service's operations, and its bounded shutdown --------------------------------


@contextmanager
def service_ops(
    service: str,
    kafka: KafkaSettings,
    *,
    topics: Sequence[str],
    group: str | None = None,
    stores: Iterable[Pingable] = (),
    settings: OpsSettings | None = None,
) -> Iterator[OpsSettings]:
    """Serve the ops endpoints of ``service`` (readiness: Kafka with ``topics``, then each
    store) and, for a consumer ``group``, measure its lag on ``topics``, while the block
    runs. Yields the ops settings (for the shutdown timeout)."""
    ops = settings or OpsSettings()
    readiness = Readiness(
        {"kafka": KafkaCheck(kafka, topics, ops.check_timeout_s), **store_checks(stores)}
    )
    port = ops.port_for(service)
    fallback = ops.port is None  # a default port, not one asked for
    server = OpsServer(readiness, ops.host, port, fallback=fallback).start() if port else None
    monitor = None
    if group is not None and ops.lag_interval_s > 0:
        monitor = LagMonitor(kafka, group, topics, ops.lag_interval_s).start()
    try:
        yield ops
    finally:
        if monitor is not None:
            monitor.stop()
        if server is not None:
            server.stop()


class _Stoppable(Protocol):
    def stop(self, fail: bool = False) -> None: ...

    def run(self) -> Any: ...


def run_quix(app: _Stoppable, shutdown_timeout_s: float) -> None:
    """``app.run()``, with a bound on its shutdown.

    Quix stops on SIGTERM (or SIGINT, or an error) by calling ``app.stop()``: it leaves the
    poll loop, flushes the sinks and commits. If that takes longer than
    ``shutdown_timeout_s`` (a store that does not answer), the process exits with status
    1; what was not committed is delivered again to the next consumer.
    """
    stop = app.stop
    armed = threading.Event()

    def stop_within_bound(fail: bool = False) -> None:
        if not armed.is_set():
            armed.set()
            timer = threading.Timer(shutdown_timeout_s, _give_up, args=(shutdown_timeout_s,))
            timer.daemon = True
            timer.start()
        stop(fail=fail)

    app.stop = stop_within_bound  # type: ignore[method-assign]
    freeze_startup_heap()
    app.run()


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, settings, the application) out of the cyclic
    garbage collector's reach, as they live as long as the process.

    A stage makes a steady stream of short-lived objects, which triggers full collections
    often; without this each of them walks the whole start-up heap again. Reference
    counting still frees frozen objects; only cycles among them would stay.
    """
    gc.collect()
    gc.freeze()


def exit_zero_after_sigterm() -> None:
    """Make a graceful SIGTERM stop of a uvicorn service end with status 0.

    uvicorn handles SIGTERM (stops accepting, finishes requests, runs the shutdown that
    flushes the producer), then raises the signal again with the handlers it found at
    start; with the default one the process would die "killed by SIGTERM". This handler,
    installed before ``uvicorn.run``, turns that second signal into exit status 0 (and a
    SIGTERM before uvicorn took over, when nothing was accepted yet, likewise).
    """

    def stopped(_signum: int, _frame: FrameType | None) -> None:
        logger.info("stopped on SIGTERM")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stopped)


def _give_up(timeout: float) -> None:
    logger.error("shutdown did not finish within %.0fs; exiting without committing", timeout)
    logging.shutdown()
    os._exit(1)
