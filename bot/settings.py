"""The one settings object (every name in ``.env.example``), from the environment and ``.env``."""

from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.api.admission import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_LONG_POLLS
from core.errors import ConfigError
from core.storage.database import (
    DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT_SECONDS,
    default_database_url,
)

_PLACEHOLDERS = ("changeme", "xoxb-your", "xapp-your", "your-", "placeholder", "todo", "example")


# Blocking handlers all wait on the database; more threads than it can serve at once only
# add contention, for the GIL and for the audit head (bench/README.md, "Agent API throughput").
DEFAULT_API_THREADS = 8
# nginx's default; httpx keeps idle connections 5 s, requests/urllib3 until the server closes.
DEFAULT_KEEP_ALIVE_SECONDS = 75


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        default_factory=default_database_url, validation_alias="STEPUP_DATABASE_URL"
    )
    policy_file: Path = Field(
        Path("manifests/policy.example.yaml"), validation_alias="STEPUP_POLICY_FILE"
    )
    keys_dir: Path = Field(Path(".stepup/keys"), validation_alias="STEPUP_KEYS_DIR")
    public_url: str = Field("", validation_alias="STEPUP_PUBLIC_URL")  # default: http://HOST:PORT
    host: str = Field("127.0.0.1", validation_alias="STEPUP_HOST")
    port: int = Field(8080, validation_alias="STEPUP_PORT")
    api_threads: int = Field(
        DEFAULT_API_THREADS, ge=1, le=256, validation_alias="STEPUP_API_THREADS"
    )
    # Admission control (bot/api/admission.py): agent API requests in flight at once in one
    # process, past which a new one gets 503 with Retry-After; parked long-polls apart.
    max_in_flight: int = Field(
        DEFAULT_MAX_IN_FLIGHT, ge=1, le=100_000, validation_alias="STEPUP_MAX_IN_FLIGHT"
    )
    max_long_polls: int = Field(
        DEFAULT_MAX_LONG_POLLS, ge=1, le=100_000, validation_alias="STEPUP_MAX_LONG_POLLS"
    )
    # Idle keep-alive connections are kept this long: longer than clients' pools keep theirs,
    # so the server never closes one just as a client reuses it.
    keep_alive_seconds: int = Field(
        DEFAULT_KEEP_ALIVE_SECONDS, ge=1, le=3600, validation_alias="STEPUP_KEEP_ALIVE_SECONDS"
    )
    # Database connections per process: at most 3 x this many (kept, and twice as many more
    # under load); a call that finds none free within the timeout gets 503.
    db_pool_size: int = Field(
        DEFAULT_POOL_SIZE, ge=1, le=1000, validation_alias="STEPUP_DB_POOL_SIZE"
    )
    db_pool_timeout_seconds: float = Field(
        DEFAULT_POOL_TIMEOUT_SECONDS,
        gt=0,
        le=300,
        validation_alias="STEPUP_DB_POOL_TIMEOUT_SECONDS",
    )
    # Worker processes of `stepup serve` on one port (PostgreSQL only; docs/scaling.md).
    workers: int = Field(1, ge=1, le=64, validation_alias="STEPUP_WORKERS")
    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="STEPUP_SLACK_API_URL")
    security_channel: str | None = Field(None, validation_alias="STEPUP_SECURITY_CHANNEL")
    digest_time: time = Field(time(9, 0), validation_alias="STEPUP_DIGEST_TIME")
    timezone: str = Field("UTC", validation_alias="STEPUP_TIMEZONE")
    sweep_interval_seconds: float = Field(10.0, validation_alias="STEPUP_SWEEP_INTERVAL_SECONDS")
    log_level: str = Field("INFO", validation_alias="STEPUP_LOG_LEVEL")
    # With no Slack token, serve the local Slack sandbox at /sandbox (loopback only).
    sandbox: bool = Field(True, validation_alias="STEPUP_SANDBOX")
    # Limits per agent (0 turns one off): requests pending at once, counted in the database so
    # it holds across replicas; submissions a minute, counted by each replica on its own.
    max_pending_per_agent: int = Field(
        10, ge=0, le=1_000_000, validation_alias="STEPUP_MAX_PENDING_PER_AGENT"
    )
    submit_rate_per_agent: int = Field(
        120, ge=0, le=1_000_000, validation_alias="STEPUP_SUBMIT_RATE_PER_AGENT"
    )
    # Signed checkpoints of the audit chain (0 turns one off): after every N entries, in the
    # write that passes a multiple of N; and every M minutes when entries came since the last.
    audit_checkpoint_entries: int = Field(
        1000, ge=0, le=100_000_000, validation_alias="STEPUP_AUDIT_CHECKPOINT_ENTRIES"
    )
    audit_checkpoint_minutes: int = Field(
        60, ge=0, le=100_000, validation_alias="STEPUP_AUDIT_CHECKPOINT_MINUTES"
    )

    @field_validator("database_url")
    @classmethod
    def _default_database(cls, value: str) -> str:
        return value.strip() or default_database_url()

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_public_url(self) -> Settings:
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        return self

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token")
    @classmethod
    def _refuse_placeholders(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        lowered = value.get_secret_value().lower()
        if any(mark in lowered for mark in _PLACEHOLDERS):
            # Never echo the value: the message names the problem, not the secret.
            raise ValueError("looks like a placeholder; set the real value or leave it empty")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and self.slack_signing_secret is not None

    @property
    def slack_delivers(self) -> bool:
        """Whether anything takes Slack messages: a real workspace or the sandbox's stand-in."""
        return self.slack_enabled or self.sandbox_off_because is None

    @property
    def sandbox_off_because(self) -> str | None:
        """Why sandbox mode is off (None: it is on). Never on with a Slack token."""
        if self.slack_bot_token is not None:
            return "a Slack bot token is configured"
        if not self.sandbox:
            return "STEPUP_SANDBOX is off"
        from ipaddress import ip_address

        host = self.host.strip().strip("[]").lower()
        try:
            loopback = host == "localhost" or ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return f"STEPUP_HOST {self.host} is not a loopback address"
        return None


def load_settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
