"""`keypool demo`: the fake providers plus the gateway, configured like a real deployment."""

from __future__ import annotations

import logging
import os

from app.demo.fake_provider import FakeProviderThread, demo_config

DEMO_ADMIN_TOKEN = "demo-admin-token"  # a documented demo constant, not a secret


def demo_environment(base_url: str) -> dict[str, str]:
    """What an operator would put in `.env` for two providers of three keys each."""
    keys = demo_config().keys
    return {
        "LLM_PROVIDERS": "alpha,beta",
        "ALPHA_API_KEYS": ",".join(k for k in keys if k.startswith("alpha")),
        "ALPHA_BASE_URL": base_url,
        "ALPHA_DEFAULT_MODEL": "fake-small",
        "ALPHA_MODELS": "fake-small,fake-large",
        "BETA_API_KEYS": ",".join(k for k in keys if k.startswith("beta")),
        "BETA_BASE_URL": base_url,
        "BETA_DEFAULT_MODEL": "fake-large",
        "BETA_MODELS": "fake-large",
    }


def banner(host: str, port: int, admin_token: str = "") -> str:
    url = f"http://{host}:{port}"
    # The demo's own token is a documented constant: print it. One the user exported is theirs:
    # refer to it by name (and the user's shell has it set).
    shown = "$ADMIN_TOKEN" if admin_token and admin_token != DEMO_ADMIN_TOKEN else DEMO_ADMIN_TOKEN
    body = '{"messages":[{"role":"user","content":"Hello!"}]}'
    return f"""
keypool demo: gateway on {url}, fake providers alpha and beta (3 keys each;
alpha key 1 is rate limited, beta key 1 is invalid).

  Dashboard: {url}/admin   (admin token: the demo's ADMIN_TOKEN, see below)
  Metrics:   {url}/metrics
  Demo traffic runs in the background (~2 requests/s; KEYPOOL_DEMO_TRAFFIC=0 stops it).

Try:

  curl -s {url}/api/chat -H 'content-type: application/json' -d '{body}'
  curl -s {url}/api/chat -H 'X-User-Id: alice' \\
       -d '{{"model":"fake-large","messages":[{{"role":"user","content":"Hi"}}]}}'
  curl -sN {url}/api/chat/stream -d '{body}'
  curl -s {url}/v1/chat/completions \\
       -d '{{"model":"auto","messages":[{{"role":"user","content":"Hi"}}]}}'
  curl -s {url}/v1/models
  curl -s {url}/api/admin/api-keys/health -H "Authorization: Bearer {shown}"
  curl -s {url}/readyz

Ctrl-C stops both.
"""


def run_demo(host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    from app.main import create_app
    from app.serving import server_options

    with FakeProviderThread(demo_config()) as fake:
        os.environ.update(demo_environment(fake.base_url))
        os.environ.setdefault("ADMIN_TOKEN", DEMO_ADMIN_TOKEN)
        os.environ.setdefault("DOCS_ENABLED", "true")  # a playground: /docs is part of the tour
        app = create_app()
        print(banner(host, port, os.environ["ADMIN_TOKEN"]), flush=True)
        print(f"  ADMIN_TOKEN for the dashboard: {admin_token_hint()}\n", flush=True)
        traffic = None
        if os.environ.get("KEYPOOL_DEMO_TRAFFIC", "1") != "0":
            from app.demo.traffic import DemoTraffic

            # The dashboard shows the traffic; one log line per demo request would bury the banner.
            for name in ("httpx", "keypool.request"):
                logging.getLogger(name).setLevel(logging.WARNING)

            traffic = DemoTraffic(f"http://{host}:{port}").start()
        try:
            uvicorn.run(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                ws_max_size=app.state.settings.ws_max_message_bytes,
                **server_options(),
            )
        finally:
            if traffic is not None:
                traffic.stop()


def admin_token_hint() -> str:
    """The demo constant is shown (it is public in the README); a token of your own is not."""
    token = os.environ.get("ADMIN_TOKEN")
    return token if token == DEMO_ADMIN_TOKEN else "the ADMIN_TOKEN you exported"
