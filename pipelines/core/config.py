"""Settings shared by every qanat process.

Each component has one settings model. Values come, highest priority first, from
keyword arguments, environment variables (``QANAT_<SECTION>_<FIELD>``), and the
section of the YAML file named by ``QANAT_CONFIG_FILE``. Validation happens at
start-up and :func:`load` reports every error at once.

>>> KafkaSettings(bootstrap_servers="broker:9092").topics.raw
'qanat.raw'
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipelines.core.errors import ConfigError
from pipelines.core.topics import TopicNames

CONFIG_FILE_ENV = "QANAT_CONFIG_FILE"


@cache
def _read_yaml(path: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {CONFIG_FILE_ENV}={path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded


class _YamlSectionSource(PydanticBaseSettingsSource):
    """Reads the settings class's section (``yaml_section``) of the YAML config file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole section

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        section_name = getattr(self.settings_cls, "yaml_section", "")
        section = _read_yaml(path).get(section_name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: section {section_name!r} must be a mapping")
        return section


class QanatSettings(BaseSettings):
    """Base of every settings model: env first, then the YAML section."""

    yaml_section: ClassVar[str] = ""
    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSectionSource(settings_cls))


class CoreSettings(QanatSettings):
    """Where qanat keeps its local files."""

    yaml_section: ClassVar[str] = "core"
    model_config = SettingsConfigDict(env_prefix="QANAT_", extra="ignore")

    data_dir: Path = Field(
        Path(".qanat"),
        description="Directory for local state: the dev broker's log, the SQLite database.",
        examples=["/var/lib/qanat"],
    )
    log_level: str = Field("INFO", description="Python log level of every qanat process.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or one JSON object per line (time, level, logger, "
        "message, and topic, partition, offset, ingestion_id when the line is about a message).",
    )


class KafkaSettings(QanatSettings):
    """How every process reaches Kafka, and the names of the topics it shares."""

    yaml_section: ClassVar[str] = "kafka"
    model_config = SettingsConfigDict(env_prefix="QANAT_KAFKA_", extra="forbid")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated.",
        examples=["127.0.0.1:9092", "pkc-xxxx.confluent.cloud:9092"],
    )
    topic_prefix: str = Field(
        "qanat",
        description="Prefix of every qanat topic: <prefix>.raw, .records, .dlq, .schemas.",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
    )
    partitions: int = Field(3, ge=1, description="Partitions of topics qanat creates.")
    replication_factor: int = Field(1, ge=1, description="Replication of topics qanat creates.")
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka settings for every client (security.protocol, sasl.*).",
        examples=[{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN"}],
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one host:port")
        return value.strip()

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def client(self, **extra: Any) -> dict[str, Any]:
        """librdkafka config for a confluent-kafka client."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.client_config, **extra}

    def consumer_group(self, name: str) -> str:
        """Group ids carry the topic prefix, so isolated pipelines share no group."""
        return f"{self.topic_prefix}.{name}"


S = TypeVar("S", bound=BaseSettings)


def load(model: type[S], **overrides: Any) -> S:
    """Build a settings model, turning every validation error into one ConfigError."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return model(**clean)
    except ValidationError as exc:
        prefix = model.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid {model.__name__}: {problems}") from None
