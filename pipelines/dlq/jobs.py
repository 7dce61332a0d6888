"""Replays started over HTTP: each runs in a thread of the HTTP service, as a job.

A job's progress lives in the service's memory (a restart forgets the job, not the
replay: its checkpoint is in Kafka, and starting the same replay again resumes it).
Two jobs of the same replay id never run at once (their transactions would fence each
other), so :meth:`ReplayJobs.start` refuses the second with :class:`JobConflictError`.

>>> ReplayJobs(None).get("nope") is None  # type: ignore[arg-type]
True
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.config import KafkaSettings
from pipelines.core.records import now
from pipelines.dlq.replay import Replayer, ReplayOptions, Verdict, transform_verdict

logger = logging.getLogger(__name__)
KEPT_JOBS = 100


class JobConflictError(Exception):
    """A job of the same replay id is running."""


@dataclass
class ReplayJob:
    """One replay run in the background; its fields are read by the progress route."""

    id: str
    options: ReplayOptions
    state: str = "running"
    examined: int = 0
    total: int | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.examined, self.total = done, total

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "replay_id": self.options.id,
            "dry_run": self.options.dry_run,
            "state": self.state,
            "examined": self.examined,
            "total": self.total,
            "summary": self.summary,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class ReplayJobs:
    """The replay jobs of one process (the newest :data:`KEPT_JOBS` are remembered)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        verdict: Callable[[], Verdict] | None = None,
    ) -> None:
        self.kafka = kafka
        self.verdict = verdict or (lambda: transform_verdict(self.kafka))
        self._jobs: OrderedDict[str, ReplayJob] = OrderedDict()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, options: ReplayOptions) -> ReplayJob:
        with self._lock:
            for job in self._jobs.values():
                if job.state == "running" and job.options.id == options.id:
                    raise JobConflictError(f"replay {options.id} is running as job {job.id}")
            job = ReplayJob(uuid.uuid4().hex, options)
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].state == "running":
                    break
                del self._jobs[oldest]
            thread = threading.Thread(
                target=self._run, args=(job,), name=f"qanat-replay-{job.id[:8]}", daemon=True
            )
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: ReplayJob) -> None:
        try:
            verdict = self.verdict() if job.options.dry_run else None
            replayer = Replayer(
                self.kafka, job.options, verdict=verdict, progress=job.progress, stop=job.stop
            )
            job.summary = replayer.run().to_json()
            job.state = "stopped" if job.stop.is_set() else "done"
        except Exception as exc:  # reported through the job, never lost in a thread
            logger.exception("replay job %s failed", job.id)
            job.error, job.state = str(exc), "failed"
        finally:
            job.finished_at = now()
            with self._lock:
                self._threads.pop(job.id, None)

    def close(self, timeout: float = 10.0) -> None:
        """Stop running jobs at their next message (their progress is committed)."""
        with self._lock:
            threads = list(self._threads.items())
        for job_id, thread in threads:
            job = self._jobs.get(job_id)
            if job is not None:
                job.stop.set()
            thread.join(timeout)
