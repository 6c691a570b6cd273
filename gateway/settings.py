"""Typed settings: `config/gateway.toml` validated by pydantic, plus the environment.

Every error names the file, the key and what is wrong, so that `gateway config check`
can print one line an operator can act on.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gateway.phone import NumberError, normalize_number

CONFIG_FILE_NAME = "gateway.toml"
DEFAULT_DATABASE_URL = "sqlite:///var/gateway.db"
DEFAULT_MEDIA_DIR = "var/media"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:5000"

# ${NAME} or ${NAME:-default}; a default lets the example config run out of the box.
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem, phrased as `file: key: problem`."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    default_region: str = "US"
    conversation_expiry_hours: int = Field(default=72, gt=0)
    send_retry_horizon_minutes: float = Field(default=60, gt=0)  # temporary send errors retried this long

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        import phonenumbers

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r} (use a two-letter code such as 'US')")
        return value.upper()


class EventWebhook(_Section):
    url: str
    secret: SecretStr
    events: list[str] | None = None


class NotifySection(_Section):
    sales_resource_on_inbound: bool = True
    service_resource_on_inbound: bool = True
    team_on_unassigned: bool = True
    webhooks: list[EventWebhook] = []


class CarrierSettings(_Section):
    name: str
    kind: Literal["twilio"]
    account_sid: str
    auth_token: SecretStr
    api_base: str | None = None
    send_timeout_seconds: float = Field(default=10, gt=0)  # waiting for the carrier's answer to a send
    media_hosts: list[str] | None = None
    delete_media_after_store: bool = False


class TeamSettings(_Section):
    name: str


class BusinessNumberSettings(_Section):
    number: str
    name: str
    carrier: str
    team: str
    appended_message: str = ""
    max_per_second: float = Field(default=1, gt=0)


# MMS media the gateway downloads: everything a customer may send from a phone, and
# nothing a browser would run (no SVG, no HTML). `type/*` allows a whole family; a type
# is only stored when its bytes can be checked against it (see gateway/media.py).
DEFAULT_MEDIA_CONTENT_TYPES = [
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff",
    "image/heic", "image/heif", "audio/*", "video/*", "application/pdf",
    "text/vcard", "text/x-vcard", "text/plain",
]


class MediaSection(_Section):
    max_file_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_message_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    allowed_content_types: list[str] = DEFAULT_MEDIA_CONTENT_TYPES
    connect_timeout_s: float = Field(default=5, gt=0)
    read_timeout_s: float = Field(default=30, gt=0)   # between two reads, not the whole file
    download_timeout_s: float = Field(default=60, gt=0)  # the whole file, redirects included
    max_redirects: int = Field(default=3, ge=0, le=10)
    # Temporary failures (5xx, timeouts) are retried until the message is this old;
    # after that the attachment is marked failed with the last reason.
    give_up_after_minutes: float = Field(default=60, gt=0)

    @field_validator("allowed_content_types")
    @classmethod
    def _media_types(cls, value: list[str]) -> list[str]:
        for item in value:
            kind, _, subtype = item.partition("/")
            if not kind or not subtype or kind == "*":
                raise ValueError(f"{item!r} is not a content type (write e.g. 'image/jpeg' or 'image/*')")
        return value


class ConfigFile(_Section):
    gateway: GatewaySection = GatewaySection()
    notify: NotifySection = NotifySection()
    media: MediaSection = MediaSection()
    carriers: list[CarrierSettings] = []
    teams: list[TeamSettings] = []
    business_numbers: list[BusinessNumberSettings] = []


class Settings(BaseModel):
    """Everything the gateway needs to run: the config file and the environment."""

    model_config = ConfigDict(frozen=True)

    config: ConfigFile
    config_path: Path
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    media_dir: Path = Path(DEFAULT_MEDIA_DIR)

    @property
    def default_region(self) -> str:
        return self.config.gateway.default_region

    def secrets(self) -> list[str]:
        """Every secret value here, for the log filter (gateway/logs.py): carrier tokens,
        event webhook signing secrets, and the passwords in the database and Redis URLs,
        each also as the base64 an `Authorization: Basic` header carries it in (Twilio's
        REST API takes the account SID and token that way)."""
        values = [c.auth_token.get_secret_value() for c in self.config.carriers]
        values += [_basic_credentials(c.account_sid, c.auth_token.get_secret_value()) for c in self.config.carriers]
        values += [w.secret.get_secret_value() for w in self.config.notify.webhooks]
        for url in (self.database_url, self.redis_url or ""):
            parts = urlsplit(url)
            if parts.password:
                user, password = unquote(parts.username or ""), unquote(parts.password)
                values += [parts.password, password, _basic_credentials(user, password)]
        return [v for v in values if v]

    def carrier_named(self, name: str) -> CarrierSettings | None:
        return next((c for c in self.config.carriers if c.name == name), None)

    def carrier_for_account(self, kind: str, account_sid: str) -> CarrierSettings | None:
        return next(
            (c for c in self.config.carriers if c.kind == kind and c.account_sid == account_sid),
            None,
        )

    def business_number(self, e164: str) -> BusinessNumberSettings | None:
        return self._business_numbers_by_e164.get(e164)

    @cached_property
    def _business_numbers_by_e164(self) -> dict[str, BusinessNumberSettings]:
        # Numbers are normalised when the file is loaded, so this is a plain lookup.
        return {b.number: b for b in self.config.business_numbers}


def _basic_credentials(user: str, password: str) -> str:
    """`user:password` as HTTP Basic authentication encodes it."""
    return base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


def load_settings(config_dir: str | os.PathLike | None = None, environ=None) -> Settings:
    """Read `gateway.toml` from the config directory and the environment, or raise ConfigError."""
    environ = os.environ if environ is None else environ
    directory = Path(config_dir or environ.get("GATEWAY_CONFIG") or "config")
    path = directory / CONFIG_FILE_NAME if directory.is_dir() else directory
    config = load_config_file(path, environ)
    return Settings(
        config=config,
        config_path=path,
        database_url=environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        redis_url=environ.get("REDIS_URL") or None,
        public_url=(environ.get("PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/"),
        media_dir=Path(environ.get("MEDIA_DIR") or DEFAULT_MEDIA_DIR),
    )


def load_config_file(path: Path, environ) -> ConfigFile:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    data = _expand_env(raw, environ, path, key="")
    try:
        config = ConfigFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{path}: {_key_path(first['loc'])}: {first['msg']}") from None
    return _check_references(config, path)


def _expand_env(value: Any, environ, path: Path, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, environ, path, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, environ, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda m: _env_value(m, environ, path, key), value)
    return value


def _env_value(match: re.Match, environ, path: Path, key: str) -> str:
    name, default = match.group(1), match.group(2)
    # As in the shell, ${NAME:-default} also applies the default when NAME is set but empty.
    if environ.get(name) or (name in environ and default is None):
        return environ[name]
    if default is not None:
        return default
    raise ConfigError(f"{path}: {key}: environment variable {name} is not set")


def _key_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _check_references(config: ConfigFile, path: Path) -> ConfigFile:
    """Cross-field rules pydantic cannot see: names exist, numbers are unique and valid."""
    carrier_names = [c.name for c in config.carriers]
    team_names = [t.name for t in config.teams]
    _no_repeats(carrier_names, "carriers", "name", path)
    _no_repeats(team_names, "teams", "name", path)
    numbers = []
    region = config.gateway.default_region
    for i, number in enumerate(config.business_numbers):
        key = f"business_numbers[{i}]"
        try:
            normalized = normalize_number(number.number, region)
        except NumberError as exc:
            raise ConfigError(f"{path}: {key}.number: {exc}") from None
        if normalized.kind == "alphanumeric":
            # Texts are sent to a business number: a sender id cannot receive them.
            raise ConfigError(
                f"{path}: {key}.number: {number.number!r} is a sender id, not a phone number or short code"
            )
        if number.carrier not in carrier_names:
            raise ConfigError(f"{path}: {key}.carrier: no carrier named {number.carrier!r}")
        if number.team not in team_names:
            raise ConfigError(f"{path}: {key}.team: no team named {number.team!r}")
        numbers.append(number.model_copy(update={"number": normalized.value}))
    _no_repeats([n.number for n in numbers], "business_numbers", "number", path)
    return config.model_copy(update={"business_numbers": numbers})


def _no_repeats(values: list[str], section: str, field: str, path: Path) -> None:
    seen = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{path}: {section}[{i}].{field}: {value!r} appears twice")
        seen.add(value)
