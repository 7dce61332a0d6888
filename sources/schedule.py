"""When a pull source polls: every N seconds, or on a cron expression (UTC).

In YAML a schedule is a mapping (``{every: 30}``, ``{cron: "*/5 * * * *"}``) or, for short,
a number of seconds or a cron string.

>>> from datetime import datetime, UTC
>>> start = datetime(2026, 1, 1, 12, 2, 30, tzinfo=UTC)
>>> Schedule.model_validate("*/5 * * * *").next_after(start).isoformat()
'2026-01-01T12:05:00+00:00'
>>> Schedule.model_validate(30).next_after(start).isoformat()
'2026-01-01T12:03:00+00:00'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_EVERY_S = 60.0


class Schedule(BaseModel):
    """Poll every ``every`` seconds, or at the times of a ``cron`` expression (UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: float | None = Field(
        None,
        gt=0,
        description="Seconds between the starts of two polls (default 60 when no cron is set).",
        examples=[30, 3600],
    )
    cron: str | None = Field(
        None,
        description="A cron expression in UTC (5 fields; a 6th, last, is seconds); not with every.",
        examples=["*/5 * * * *", "0 3 * * *"],
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"every": value}
        if isinstance(value, str):
            try:
                return {"every": float(value)}
            except ValueError:
                return {"cron": value}
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either every or cron, not both")
        return self

    def next_after(self, moment: datetime) -> datetime:
        """The first poll time after ``moment`` (an aware datetime)."""
        if self.cron is not None:
            next_time: datetime = croniter(self.cron, moment.astimezone(UTC)).get_next(datetime)
            return next_time
        return moment + timedelta(seconds=self.every or DEFAULT_EVERY_S)

    def describe(self) -> str:
        return f"cron {self.cron!r}" if self.cron else f"every {self.every or DEFAULT_EVERY_S}s"
