"""The gateway with its observability switched off: the baseline of scenario 7, never for serving.

The same build as `app.main:app` minus what observability adds per request: the RequestObserver
middleware (request metrics, the summary, request ids and the request log line), the per-attempt
metrics sink and the settlement observer (upstream durations, state-change logs, alerts). Run it
with LOG_LEVEL=WARNING. Patched here, in the bench only, so that the product has no switch that
silently turns its metrics off.
"""

from __future__ import annotations

from typing import Any

from app import runtime
from app.main import create_app
from app.observability.middleware import RequestObserver

_OBSERVER: Any = RequestObserver
_build_chat: Any = getattr(runtime, "build_chat")  # noqa: B009 - not re-exported there


def _unmetered(stats: Any, *unused: Any) -> Any:
    return stats  # the stats writer alone: no Prometheus or summary recording per attempt


def _unobserved(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("observer", None)
    return _build_chat(*args, **kwargs)


setattr(runtime, "MeteredSink", _unmetered)  # noqa: B010 - looked up when the lifespan runs
setattr(runtime, "build_chat", _unobserved)  # noqa: B010

app = create_app()
app.user_middleware = [m for m in app.user_middleware if m.cls is not _OBSERVER]
