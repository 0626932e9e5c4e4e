"""Pure ASGI middleware: who is calling the chat routes, and may they (rate limit, budget)?

It runs before any route: a refused request never reaches the key pool. On success it
rewrites `x-user-id` to the authenticated user (routes read that header first, so the body's
`user`/`user_id` and a forged header cannot impersonate anyone), stores the Principal in
`scope["keypool.principal"]` and adds OpenAI's x-ratelimit-* headers to the answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access.errors import BudgetExceeded, ClientUnauthorized, UserRateLimited
from app.access.principal import Principal
from app.access.ratelimit import Decision
from app.access.service import Access
from app.api.errors import openai_error_body
from app.errors import KeypoolError

PRINCIPAL = "keypool.principal"
MAX_USER_ID_CHARS = 255


def protected(path: str) -> bool:
    """Chat routes (JSON, SSE, batch, websocket) and the whole OpenAI-compatible surface."""
    return path == "/api/chat" or path.startswith(("/api/chat/", "/v1/")) or path == "/v1"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _bearer(scope: Scope) -> str | None:
    raw = _header(scope, b"authorization")
    if raw is None:
        return None
    scheme, _, token = raw.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _query(scope: Scope) -> list[tuple[str, str]]:
    raw = scope.get("query_string", b"")
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []


def _presented(scope: Scope) -> str | None:
    """The bearer token; a websocket may carry it as `?token=`, which leaves the query here."""
    presented = _bearer(scope)
    if scope["type"] == "websocket":
        query = _query(scope)
        if presented is None:
            presented = next((v for k, v in query if k == "token"), None) or None
        # The server logs the handshake path with its query: never with the key in it.
        scope["query_string"] = urlencode([(k, v) for k, v in query if k != "token"]).encode()
    return presented


def _client(access: Access, scope: Scope) -> Principal:
    """AUTH_MODE=token: the client key's user, or 401."""
    presented = _presented(scope)
    principal = access.by_client_key(presented) if presented else None
    if principal is None:
        raise ClientUnauthorized(
            "missing, unknown or revoked client key: send Authorization: Bearer kp-..."
        )
    return principal


async def _trusted(
    access: Access, scope: Scope, receive: Receive
) -> tuple[Principal | None, Receive]:
    """AUTH_MODE=trusted: the service token, then the user it names (None: the backend's own)."""
    presented = _presented(scope)
    if presented is None or not access.is_service_token(presented):
        raise ClientUnauthorized("missing or invalid service token")
    user = _header(scope, b"x-user-id")
    if not user and scope["type"] == "websocket":
        user = next((v for k, v in _query(scope) if k == "user_id"), None)
    if not user and scope["path"] == "/v1/chat/completions":
        user, receive = await _body_user(receive)
    if not user or len(user) > MAX_USER_ID_CHARS:
        return None, receive  # the backend's own traffic; an over-long id fails validation
    return access.for_user(user), receive


def error_body(path: str, exc: KeypoolError) -> dict[str, Any]:
    if path.startswith("/v1"):
        body = openai_error_body(exc)
        if isinstance(exc, ClientUnauthorized):
            body["error"]["code"] = exc.openai_code
        return body
    return exc.body()


class AccessMiddleware:
    """Authenticate, rate-limit and budget-check chat requests per AUTH_MODE."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        access: Access | None = scope.get("state", {}).get("access")
        if access is None or access.mode == "none" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        try:
            if access.mode == "token":
                principal: Principal | None = _client(access, scope)
            else:
                principal, receive = await _trusted(access, scope, receive)
            decision = await check(access, principal) if principal is not None else None
        except KeypoolError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        if principal is None or decision is None:
            await self.app(scope, receive, send)
            return
        self._rewrite(scope, principal)
        if kind == "websocket":
            receive = _pin_ws_user(receive, principal.user_id)
        extra = decision.headers()

        async def send_with_limits(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    def _rewrite(self, scope: Scope, principal: Principal) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k != b"x-user-id"]
        headers.append((b"x-user-id", principal.user_id.encode()))
        scope["headers"] = headers
        if scope["type"] == "websocket" and scope.get("query_string"):
            kept = [(k, v) for k, v in _query(scope) if k != "user_id"]
            scope["query_string"] = urlencode(kept).encode()
        scope[PRINCIPAL] = principal

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: KeypoolError) -> None:
        body = orjson.dumps(error_body(scope["path"], exc))
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        if scope["type"] == "http":
            await send(
                {"type": "http.response.start", "status": exc.status_code, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        message = await receive()  # websocket.connect; refuse before accepting
        if message["type"] != "websocket.connect":
            return
        # A close before accept is the handshake's refusal (HTTP 403): every ASGI server knows
        # it, and uvicorn logs a denial *response* as an unfinished handshake.
        await send({"type": "websocket.close", "code": 1008})


def require_budget(access: Access, principal: Principal) -> None:
    left = access.budget_left_s(principal)
    if left is not None:
        raise BudgetExceeded(
            f"daily budget of ${principal.daily_budget_usd:g} spent; it renews at 00:00 UTC",
            left,
        )


async def check(access: Access, principal: Principal) -> Decision:
    """Budget, then the rate limit: one request (or websocket frame) of an authenticated user."""
    require_budget(access, principal)
    decision = await access.admit(principal)
    if not decision.allowed:
        headers = {k.decode(): v.decode() for k, v in decision.headers()}
        raise UserRateLimited(
            f"over {principal.rpm} requests per minute for this user",
            decision.retry_after_s,
            headers,
        )
    return decision


async def _body_user(receive: Receive) -> tuple[str | None, Receive]:
    """Read the /v1 body to learn its `user`, then replay it to the route unchanged."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    user: str | None = None
    try:
        data = orjson.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("user"), str):
            user = data["user"]
    except orjson.JSONDecodeError:
        pass

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return user, replay


def _pin_ws_user(receive: Receive, user_id: str) -> Receive:
    """A websocket message's own `user_id` would override the socket's user: pin it."""

    async def pinned() -> Message:
        message = await receive()
        text = message.get("text") if message["type"] == "websocket.receive" else None
        if text and '"user_id"' in text:
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                return message
            if isinstance(data, dict) and "user_id" in data:
                data["user_id"] = user_id
                return {**message, "text": orjson.dumps(data).decode()}
        return message

    return pinned
