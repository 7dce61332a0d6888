"""The settings of ``qanat sink postgres`` (env ``QANAT_POSTGRES_*``, YAML ``postgres``),
shared by the records sink, its connections and the errors, ingestions and reader tables.

>>> PostgresSinkSettings(dsn="postgresql://qanat@127.0.0.1/qanat").where()
'127.0.0.1:5432/qanat as qanat'
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from pipelines.core.config import QanatSettings
from sinks.base import SQL_IDENTIFIER


class PostgresSinkSettings(QanatSettings):
    """Settings of ``qanat sink postgres`` (env ``QANAT_POSTGRES_*``, YAML ``postgres``)."""

    yaml_section: ClassVar[str] = "postgres"
    model_config = SettingsConfigDict(env_prefix="QANAT_POSTGRES_", extra="forbid")

    dsn: SecretStr = Field(
        description="libpq connection string or URI of the database.",
        examples=["postgresql://qanat:secret@127.0.0.1:5432/qanat"],
    )
    table: str = Field(
        "records",
        pattern=SQL_IDENTIFIER,
        description="Table of current state, one row per vertical/type/source_id.",
    )
    schema_name: str = Field(
        "public", pattern=SQL_IDENTIFIER, description="Schema of the table; created if missing."
    )
    pool_min_size: int = Field(1, ge=0, description="Connections the pool keeps open.")
    pool_max_size: int = Field(4, ge=1, description="Most connections the pool opens.")
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description=("Seconds to wait for a new connection, or for a free one from the pool."),
    )
    lock_timeout_ms: int = Field(
        10_000,
        ge=0,
        description=(
            "Longest wait for a row or table lock before the batch is retried (0: forever)."
        ),
    )
    application_name: str = Field(
        "qanat-sink-postgres", description="application_name shown in pg_stat_activity."
    )
    create_tables: bool = Field(True, description="Create the schema, table and index at start.")

    @field_validator("dsn")
    @classmethod
    def _parsable(cls, value: SecretStr) -> SecretStr:
        try:
            conninfo_to_dict(value.get_secret_value())
        except psycopg.ProgrammingError:
            raise ValueError("not a libpq connection string or postgresql:// URI") from None
        return value

    @field_validator("pool_max_size")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("pool_min_size", 0):
            raise ValueError("must be at least pool_min_size")
        return value

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq options added to the DSN for every connection."""
        return {
            "connect_timeout": max(1, round(self.connect_timeout_s)),
            "application_name": self.application_name,
            "options": f"-c lock_timeout={self.lock_timeout_ms}",
        }

    def where(self) -> str:
        """host:port/dbname as user, without the password, for messages."""
        info = conninfo_to_dict(self.dsn.get_secret_value())
        return (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/"
            f"{info.get('dbname', '?')} as {info.get('user', '?')}"
        )
