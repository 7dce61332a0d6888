"""Settings every pull connector shares, and the dotted paths they use to find fields.

A connector's settings model subclasses :class:`PullSourceSettings`, adding its own fields
(each with a description; secrets as ``SecretStr``); a name the connector puts in its
queries (a table, a column, a label) is a :data:`NonBlankStr`.

>>> settings = PullSourceSettings(kind="x", name="shop-api", vertical="shop", type="product",
...                               source_id_field="sku")
>>> settings.schedule.every, settings.map_record({"sku": 7, "name": "Lamp"})["source_id"]
(60.0, '7')
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from pipelines.core.records import check_identifier
from sources.retry import RetrySettings
from sources.schedule import DEFAULT_EVERY_S, Schedule


def get_path(obj: Any, path: str | None) -> Any:
    """The value at a dotted ``path`` (``data.items``; list items by index: ``rows.0``);
    None when any part is missing. An empty or None path is the object itself.

    >>> get_path({"data": {"items": [{"id": 7}]}}, "data.items.0.id")
    7
    """
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and _index(part, len(obj)) is not None:
            obj = obj[int(part)]
        else:
            return None
    return obj


def _index(part: str, length: int) -> int | None:
    if part.lstrip("-").isdigit() and -length <= int(part) < length:
        return int(part)
    return None


def not_blank(value: str) -> str:
    """``value``, unless it is empty or only white space (ValueError).

    >>> not_blank("Product")
    'Product'
    >>> not_blank("  ")
    Traceback (most recent call last):
    ValueError: must not be empty
    """
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlankStr = Annotated[str, AfterValidator(not_blank)]
"""A settings field that must not be empty or blank (a table, column, label, property)."""


class SourceSettings(BaseModel):
    """What a source producing to the raw topic is: a name (naming its saved state), the
    vertical and type of its records, how to find their source_id and name, and retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="Unique name of this source: it names its saved cursor (state), so "
        "renaming a source starts it from the beginning.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        examples=["shop-products"],
    )
    vertical: str = Field(description="Vertical of every record of this source.")
    type: str = Field(description="Type of every record of this source.")
    retry: RetrySettings = Field(
        default_factory=RetrySettings, description="Retries of failed requests."
    )
    source_id_field: str | None = Field(
        None,
        description="Dotted path of the field that becomes source_id (the upsert key) when "
        "a record has no source_id.",
        examples=["id", "product.sku"],
    )
    name_field: str | None = Field(
        None,
        description="Dotted path of the field that becomes name when a record has no name.",
        examples=["title"],
    )

    @field_validator("vertical", "type")
    @classmethod
    def _identifier(cls, value: str, info: ValidationInfo) -> str:
        return check_identifier(info.field_name or "name", value)

    def map_record(self, obj: Any) -> Any:
        """The record with ``source_id`` / ``name`` filled in from the mapped fields."""
        if not isinstance(obj, dict) or not (self.source_id_field or self.name_field):
            return obj
        mapped = dict(obj)
        for target, path in (("source_id", self.source_id_field), ("name", self.name_field)):
            value = get_path(obj, path) if path and obj.get(target) is None else None
            if value is not None:
                mapped[target] = value if isinstance(value, str) else str(value)
        return mapped


class PullSourceSettings(SourceSettings):
    """What every pull connector's settings share (``qanat collect``'s ``sources:`` list)."""

    kind: str = Field(description="The connector: rest, graphql, ... or module:Class.")
    schedule: Schedule = Field(
        default_factory=lambda: Schedule(every=DEFAULT_EVERY_S),
        description="When to poll: {every: seconds} or {cron: '*/5 * * * *'} (UTC); a "
        "number or a cron string for short.",
    )
