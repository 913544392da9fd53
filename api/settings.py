"""Service settings, read from the environment (prefix RELATED_) by pydantic-settings.

`related serve` sets RELATED_DATA_DIR / HOST / PORT / WORKERS from its flags; everything
else comes from the environment, e.g. `RELATED_ADMIN_TOKEN=... RELATED_CORS_ORIGINS=https://cms.example`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELATED_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Directory holding versions/ and the `current` link.")
    host: str = Field("127.0.0.1", description="Interface `related serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port `related serve` listens on.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (each maps the index).")
    cache_max_age: int = Field(300, ge=0, description="Cache-Control max-age (seconds) of GET related lists.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated or JSON list); empty: no CORS."
    )
    max_body_bytes: int = Field(MIB, ge=1, description="Largest accepted request body; larger ones get 413.")
    max_header_bytes: int = Field(
        32 * KIB, ge=KIB, description="Largest request line plus headers; larger ones get 431 and the connection closes."
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="A request not answered within this time gets 408 (body still arriving) or 503; "
        "admin endpoints are exempt."
    )
    keep_alive_seconds: float = Field(5.0, gt=0, description="An idle keep-alive connection is closed after this time.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for POST /v1/admin/reload; unset: the admin endpoint is disabled (404)."
    )
    reload_check_seconds: float = Field(
        2.0, gt=0, description="How often the `current` link is checked for a new version."
    )
    prefault_bytes: int = Field(
        GIB, ge=0, description="Bytes of a loaded version's memory-mapped files mapped into each worker when it loads "
        "(what GET related reads first: served and neighbour lists, list items, id index, filter columns; then the FAISS "
        "index and vectors drafts read), so the first requests after a (re)load are as fast as later ones and the "
        "resident size does not creep up for minutes. Shared page cache, not private memory; Linux only (0: off)."
    )
    response_cache_size: int = Field(
        4096, ge=0, description="Rendered GET related responses kept in memory per worker (0: off)."
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError as err:
                    raise ValueError(f"not a JSON list of origins ({err}); or give them comma-separated") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value


def describe_invalid(err: ValidationError, flags: set[str] = frozenset()) -> str:
    """One line naming each bad setting as the operator wrote it: `--port` if given as a flag of
    `related serve`, else its environment variable (`RELATED_WORKERS='abc': ...`)."""
    problems = []
    for problem in err.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        name = f"--{field.replace('_', '-')}" if field in flags else f"RELATED_{field.upper()}"
        problems.append(f"{name}={problem['input']!r}: {problem['msg']}")
    return "; ".join(problems) or str(err)
