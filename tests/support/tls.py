"""One shared TLS context for the suite's httpx clients.

httpx builds a new verifying TLS context for every client, parsing a whole CA bundle (about
20 ms of CPU), and `httpx.get`/`httpx.post` make a client per call. The suite makes thousands of
them, all for plain HTTP on loopback: a sixth of its CPU went there. The default context is
built once per CA setting (SSL_CERT_FILE, SSL_CERT_DIR) instead; any other arguments still get
httpx's own function.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import httpx
import httpx._transports.default as _transport

_build = httpx.create_ssl_context


@functools.cache
def _default_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return _build()  # reads the same two variables


def _shared(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    if verify is True and cert is None and trust_env:
        return _default_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return _build(verify=verify, cert=cert, trust_env=trust_env)


def share_default_tls_context() -> None:
    """Make httpx's transports use the shared default context (idempotent)."""
    if getattr(_transport, "create_ssl_context", None) not in (_build, _shared):
        raise RuntimeError("httpx's transports no longer call httpx.create_ssl_context")
    setattr(_transport, "create_ssl_context", _shared)  # noqa: B010 (not re-exported by httpx)
