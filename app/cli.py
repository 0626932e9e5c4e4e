"""The `keypool` command: serve, demo, keys (fingerprints only), db upgrade/downgrade."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.config import ConfigError, load_settings, read_environment


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.websocket import WS_PING_INTERVAL_S, WS_PING_TIMEOUT_S
    from app.serving import server_options

    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    # Each worker learns N from here: its share of every key's budget without REDIS_URL, and
    # the 1/N it falls back to if Redis goes away.
    os.environ["WEB_CONCURRENCY"] = str(args.workers)
    settings = load_settings()  # fail here, with one clear message, rather than in every worker
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        ws_ping_interval=WS_PING_INTERVAL_S,  # keeps idle /api/chat/ws sockets alive
        ws_ping_timeout=WS_PING_TIMEOUT_S,
        ws_max_size=settings.ws_max_message_bytes,  # refused by the server before buffering
        **server_options(),  # header timeout, keep-alive, header size, concurrency bound
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from app.demo.runner import run_demo

    run_demo(args.host, args.port)
    return 0


def _keys(args: argparse.Namespace) -> int:
    settings = load_settings()
    for provider in settings.providers:
        print(
            f"{provider.name}  base_url={provider.base_url}  default_model={provider.default_model}"
        )
        for key in provider.keys:
            print(f"  {key.fingerprint}")
    return 0


def _db(args: argparse.Namespace) -> int:
    from app.db.migrate import downgrade, upgrade

    url = load_settings_url()
    if args.action == "upgrade":
        upgrade(url, args.revision or "head")
    else:
        downgrade(url, args.revision or "base")
    print(f"database {args.action} done")
    return 0


def load_settings_url() -> str:
    from app.config import Settings, normalize_database_url, read_environment

    env = read_environment()
    url = env.get("DATABASE_URL") or str(Settings.model_fields["database_url"].default)
    try:
        return normalize_database_url(url)
    except ValueError as exc:
        raise ConfigError(f"invalid setting DATABASE_URL: {exc}") from None


def _int(env: dict[str, str], var: str, default: int) -> int:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{var} must be a whole number, got {raw!r}")
    return int(raw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keypool", description="Multi-key LLM chat gateway")
    env = read_environment()  # HOST, PORT, WEB_CONCURRENCY from `.env` too; the real env wins
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (configuration from env / .env)")
    serve.add_argument("--host", default=env.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=_int(env, "PORT", 8000))
    serve.add_argument(
        "--workers",
        type=int,
        default=_int(env, "WEB_CONCURRENCY", 1),
        help="worker processes (default: $WEB_CONCURRENCY or 1); with REDIS_URL they share one pool",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)
    demo = commands.add_parser("demo", help="gateway + built-in fake providers, no real keys")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=_int(env, "PORT", 8000))
    demo.set_defaults(run=_demo)
    keys = commands.add_parser("keys", help="list configured keys by fingerprint")
    keys.set_defaults(run=_keys)
    db = commands.add_parser("db", help="database migrations (Alembic)")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?")
    db.set_defaults(run=_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except ConfigError as exc:
        print(f"keypool: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
