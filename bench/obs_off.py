"""The gateway with its observability switched off: the baseline of scenario 7, never for serving.

The same build as `app.main:app` minus what observability adds per request: the edge
middleware's request record and ids (metrics, summary, the request log line), the per-attempt
metrics sink and the settlement observer (upstream durations, state-change logs, alerts). Run it
with LOG_LEVEL=WARNING and METRICS_ENABLED=false. Patched here, in the bench only: the product's
own switches (METRICS_ENABLED, LOG_LEVEL) leave request ids, the summary and alerts on.
"""

from __future__ import annotations

from typing import Any

from app import runtime
from app.api.edge import EdgeMiddleware
from app.main import create_app

_build_chat: Any = getattr(runtime, "build_chat")  # noqa: B009 - not re-exported there


def _unmetered(stats: Any, *unused: Any) -> Any:
    return stats  # the stats writer alone: no Prometheus or summary recording per attempt


def _unobserved(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("observer", None)
    return _build_chat(*args, **kwargs)


setattr(runtime, "MeteredSink", _unmetered)  # noqa: B010 - looked up when the lifespan runs
setattr(runtime, "build_chat", _unobserved)  # noqa: B010
EdgeMiddleware.observe = False  # the crash guard only: no ids, no record

app = create_app()
