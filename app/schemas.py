"""Request models (pydantic v2) for the keypool API and the OpenAI-compatible API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DEFAULT_MAX_CHARS = 50_000
MAX_USER_ID_CHARS = 255  # user_profiles.user_id is a String(255)
# Numbers and flags are strict: "0.5", true or "yes" where a number or a bool belongs is a client
# bug that OpenAI refuses too, and lax coercion would silently send max_tokens=1 for `true`.


def _max_chars(info: ValidationInfo) -> int:
    context = info.context if isinstance(info.context, dict) else {}
    return int(context.get("max_message_chars", DEFAULT_MAX_CHARS))


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: str, info: ValidationInfo) -> str:
        limit = _max_chars(info)
        if len(value) > limit:
            raise ValueError(f"content is {len(value)} characters; the limit is {limit}")
        return value


class ChatRequest(BaseModel):
    """POST /api/chat, /api/chat/stream and each websocket frame (DESIGN.md §3)."""

    model_config = ConfigDict(extra="ignore")

    messages: list[Message] = Field(min_length=1, max_length=1000)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    provider: str | None = Field(default=None, min_length=1, max_length=64)
    fallback: bool = Field(default=True, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    stop: str | list[str] | None = None
    id: str | int | None = None
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_USER_ID_CHARS)
    cache: bool | None = Field(default=None, strict=True)  # response cache: opt in / out

    def upstream_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages]
        }
        for name in ("temperature", "max_tokens", "top_p", "stop"):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        return params


class BatchRequest(BaseModel):
    """POST /api/chat/batch: items are validated one by one so one bad item fails alone."""

    requests: list[Any] = Field(min_length=1, max_length=16)


_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value not in _OPENAI_ROLES:
            raise ValueError(f"unknown role {value!r}; expected one of {sorted(_OPENAI_ROLES)}")
        return value

    @field_validator("content")
    @classmethod
    def _bounded(
        cls, value: str | list[dict[str, Any]] | None, info: ValidationInfo
    ) -> str | list[dict[str, Any]] | None:
        limit = _max_chars(info)
        text = (
            value
            if isinstance(value, str)
            else "".join(
                str(part.get("text", "")) for part in value or () if isinstance(part, dict)
            )
        )
        if len(text) > limit:
            raise ValueError(f"content is {len(text)} characters; the limit is {limit}")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


_LOCAL_FIELDS = {"model", "stream", "stream_options", "cache"}  # never sent upstream


class OpenAIChatRequest(BaseModel):
    """POST /v1/chat/completions; unknown OpenAI fields (tools, response_format…) pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=1000)
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    user: str | None = Field(default=None, max_length=4096)
    cache: bool | None = Field(default=None, strict=True)  # response cache, via extra_body

    def upstream_params(self, raw: dict[str, Any] | None = None) -> dict[str, Any]:
        """The validated body as the upstream gets it; `raw` (the parsed JSON this model was
        validated from) is forwarded as is, which skips a serialisation round trip."""
        if raw is not None:
            return {k: v for k, v in raw.items() if k not in _LOCAL_FIELDS and v is not None}
        return self.model_dump(exclude_none=True, exclude=_LOCAL_FIELDS)
