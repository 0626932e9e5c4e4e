"""The `keypool` command: serve, demo, keys (fingerprints only), db upgrade/downgrade."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.access.cli import add_parser as add_clients_parser
from app.config import (
    WS_PING_INTERVAL_S,
    WS_PING_TIMEOUT_S,
    ConfigError,
    Settings,
    load_settings,
    read_environment,
)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.serving import server_options

    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    # Each worker learns N from here: its share of every key's budget without REDIS_URL, and
    # the 1/N it falls back to if Redis goes away.
    os.environ["WEB_CONCURRENCY"] = str(args.workers)
    os.environ["HOST"] = args.host  # AUTH_MODE=none on a public host is warned about at start
    from app.metrics import prepare_multiprocess

    prepare_multiprocess(args.workers)  # one /metrics for all workers
    settings = load_settings()  # fail here, with one clear message, rather than in every worker
    _check_master_key(settings)
    # LOG_FORMAT=json: uvicorn's own lines go through the app's JSON handler too.
    json_logs = settings.log_format == "json"
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
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
    if args.action == "check":
        from app.observability.cli import run_keys_check

        return run_keys_check(settings)
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


def _stats(args: argparse.Namespace) -> int:
    from app.observability.cli import run_stats

    token = os.environ.get("ADMIN_TOKEN")
    return run_stats(args.url, token, args.window, load_settings_url())


def _check_master_key(settings: Settings) -> None:
    from app.vault.rotation import verify_master_key_sync

    key = settings.keypool_master_key
    verify_master_key_sync(settings.database_url, key.get_secret_value() if key else None)


def _vault(args: argparse.Namespace) -> int:
    import asyncio

    from app.config import decode_master_key, read_environment
    from app.vault.rotation import rotate_master_with_url

    env = read_environment()
    old = env.get("KEYPOOL_MASTER_KEY", "").strip()
    if not old:
        raise ConfigError("KEYPOOL_MASTER_KEY (the current master key) is not set")
    if args.new_key_env:
        new = env.get(args.new_key_env, "").strip()
        if not new:
            raise ConfigError(f"{args.new_key_env} (the new master key) is not set")
    else:
        new = sys.stdin.readline().strip()
    for name, value in (("KEYPOOL_MASTER_KEY", old), ("the new master key", new)):
        try:
            decode_master_key(value)
        except ValueError as exc:
            raise ConfigError(f"{name} {exc}") from None
    result = asyncio.run(rotate_master_with_url(load_settings_url(), old, new))
    if result.already_rotated:
        print(f"all {result.rows} stored keys are already under the new master key")
    else:
        print(f"re-encrypted {result.rows} stored keys; now set KEYPOOL_MASTER_KEY to the new key")
    return 0


def load_settings_url() -> str:
    from app.config import normalize_database_url

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
    keys = commands.add_parser("keys", help="list keys by fingerprint; `keys check` probes them")
    keys.add_argument("action", nargs="?", choices=["list", "check"], default="list")
    keys.set_defaults(run=_keys)
    stats = commands.add_parser("stats", help="metrics summary of a running gateway + DB totals")
    port = os.environ.get("PORT", "8000")
    stats.add_argument("--url", default=os.environ.get("KEYPOOL_URL", f"http://127.0.0.1:{port}"))
    stats.add_argument("--window", choices=["5m", "1h", "24h"], default="1h")
    stats.set_defaults(run=_stats)
    db = commands.add_parser("db", help="database migrations (Alembic)")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?")
    db.set_defaults(run=_db)
    vault = commands.add_parser("vault", help="the encrypted key vault")
    vault.add_argument("action", choices=["rotate-master"])
    vault.add_argument(
        "--new-key-env",
        metavar="VAR",
        help="environment variable holding the new master key (default: read it from stdin)",
    )
    vault.set_defaults(run=_vault)
    add_clients_parser(commands)
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
