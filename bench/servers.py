"""The three kinds of server the bench runs: fake provider, passthrough and keypool gateway."""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import LOADGEN_CORE, PYTHON, REPO, SERVER_CORE, Server, Servers, free_port, start

MODELS = ["fake-small", "fake-large"]
UVICORN_FLAGS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
]
# Environment variables of the parent that must not leak into the gateway's configuration.
_LEAKY = re.compile(
    r"^(LLM_PROVIDERS|REDIS_URL|DATABASE_URL|KEY_[A-Z_]+|PROVIDER_ROTATION|"
    r"ADMIN_TOKEN|REQUEST_DEADLINE_S|[A-Z0-9]+_(API_KEYS?(_\d+)?|BASE_URL|"
    r"DEFAULT_MODEL|MODELS|RPM_PER_KEY|TPM_PER_KEY|TIMEOUT_S|KEY_WEIGHTS))$"
)


def keys(n: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(n)]


def fake_config(
    key_names: list[str], special: dict[str, dict[str, Any]] | None = None, **behaviour: Any
) -> dict[str, Any]:
    """Fake provider config: every key gets `behaviour`; `special` overrides single keys."""
    special = special or {}
    return {
        "keys": {k: {**behaviour, **special.get(k, {})} for k in key_names},
        "models": MODELS,
    }


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _LEAKY.match(k)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def start_fake(group: Servers, config: dict[str, Any], log_dir: Path) -> Server:
    port = free_port()
    cfg_path = log_dir / f"fake-config-{port}.json"
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(config, indent=1))
    argv = [
        PYTHON,
        "-m",
        "app.demo.fake_provider",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(cfg_path),
    ]
    server = start(
        "fake",
        argv,
        port=port,
        log_dir=log_dir,
        core=LOADGEN_CORE,
        env=clean_env({}),
        ready_path="/_control/stats",
        timeout=30,
    )
    return group.add(server)


def start_passthrough(group: Servers, fake: Server, key_names: list[str], log_dir: Path) -> Server:
    port = free_port()
    env = clean_env(
        {"PASSTHROUGH_UPSTREAM": f"{fake.base}/v1", "PASSTHROUGH_KEYS": ",".join(key_names)}
    )
    argv = [
        PYTHON,
        "-m",
        "uvicorn",
        "bench.passthrough:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_FLAGS,
    ]
    server = start(
        "passthrough",
        argv,
        port=port,
        log_dir=log_dir,
        core=SERVER_CORE,
        env=env,
        ready_path="/healthz",
        timeout=30,
    )
    return group.add(server)


def start_gateway(
    group: Servers,
    fake: Server,
    key_names: list[str],
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    app: str | None = None,
) -> Server:
    """keypool under uvicorn; with `workers` > 1 `Server.pid` is uvicorn's parent (stopping it
    stops the workers, which inherit its core) and WEB_CONCURRENCY tells the app how many."""
    port = free_port()
    db_dir = Path(tempfile.mkdtemp(prefix="keypool-bench-", dir=log_dir))
    settings = {
        "LLM_PROVIDERS": "fake",
        "FAKE_API_KEYS": ",".join(key_names),
        "FAKE_BASE_URL": f"{fake.base}/v1",
        "FAKE_DEFAULT_MODEL": "fake-small",
        "FAKE_MODELS": ",".join(MODELS),
        "DATABASE_URL": f"sqlite+aiosqlite:///{db_dir}/bench.db",
        **({"WEB_CONCURRENCY": str(workers)} if workers > 1 else {}),
        **(extra_env or {}),
    }
    # Another ASGI app to bench: `app` (a scenario's variant), else BENCH_GATEWAY_APP.
    app = app or os.environ.get("BENCH_GATEWAY_APP", "app.main:app")
    argv = [
        PYTHON,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_FLAGS,
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    server = start(
        "gateway",
        argv,
        port=port,
        log_dir=log_dir,
        core=SERVER_CORE,
        env=clean_env(settings),
        ready_path="/readyz",
        timeout=60,
    )
    server.extra.update({k: v for k, v in settings.items() if k != "DATABASE_URL"})
    return group.add(server)


def fake_stats(fake: Server) -> dict[str, Any]:
    with urllib.request.urlopen(fake.base + "/_control/stats", timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def upstream_counts(stats: dict[str, Any]) -> dict[str, int]:
    """Total chat requests and per-status counts across keys, from `/_control/stats`."""
    total = 0
    status: dict[str, int] = {}
    for counters in (stats.get("keys") or {}).values():
        total += int(counters.get("requests", 0))
        for code, n in (counters.get("status") or {}).items():
            status[str(code)] = status.get(str(code), 0) + int(n)
    return {"requests": total, **{f"status_{c}": n for c, n in sorted(status.items())}}


def gateway_available() -> str | None:
    """None when the gateway can be imported by path, else why not."""
    if not (REPO / "app" / "main.py").exists():
        return "app/main.py does not exist yet"
    return None


def fake_available() -> str | None:
    mod = REPO / "app" / "demo"
    if not any((mod / p).exists() for p in ("fake_provider.py", "fake_provider/__main__.py")):
        return "app/demo/fake_provider does not exist yet"
    return None
