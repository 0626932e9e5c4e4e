"""`keypool clients create|list|revoke`: client keys straight in the database (no gateway needed)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from app.access.clientkeys import generate_key, hash_key, key_prefix
from app.access.tiers import parse_tiers
from app.config import ConfigError, Settings, read_environment
from app.db.access import ClientKey, ClientKeyRepository
from app.db.migrate import upgrade_async
from app.db.session import create_engine, create_sessionmaker


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clients = commands.add_parser("clients", help="client keys for AUTH_MODE=token")
    actions = clients.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; it is printed once, never again")
    create.add_argument("user_id")
    create.add_argument("--tier")
    create.add_argument("--name")
    create.add_argument("--rpm", type=int)
    create.add_argument("--daily-budget-usd", type=float)
    actions.add_parser("list", help="list keys (prefix only)")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    clients.set_defaults(run=run)


def _setting(env: dict[str, str], name: str) -> str:
    value = env.get(name.upper())
    return value or str(Settings.model_fields[name].default)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    env = read_environment()
    url = _setting(env, "database_url")
    if args.action == "create" and args.tier is not None:
        try:
            tiers = parse_tiers(
                _setting(env, "tier_rpm"),
                _setting(env, "tier_daily_budget_usd"),
                _setting(env, "default_tier"),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not tiers.known(args.tier):
            raise ConfigError(f"unknown tier {args.tier!r}; tiers: {', '.join(tiers.rpm)}")
    await upgrade_async(url)
    engine = create_engine(url, pooled=False)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            repo = ClientKeyRepository(session)
            if args.action == "create":
                secret = generate_key()
                key = await repo.create(
                    key_hash=hash_key(secret),
                    key_prefix=key_prefix(secret),
                    user_id=args.user_id,
                    tier=args.tier,
                    name=args.name,
                    rpm=args.rpm,
                    daily_budget_usd=args.daily_budget_usd,
                    created_at=datetime.now(UTC),
                )
                print(_line(key))
                print(f"key (shown once, store it now): {secret}")
            elif args.action == "list":
                for key in await repo.list():
                    print(_line(key))
            else:
                revoked = await repo.revoke(args.id, datetime.now(UTC))
                if revoked is None:
                    print(f"no client key {args.id}")
                    return 1
                print(_line(revoked))
    finally:
        await engine.dispose()
    return 0


def _line(key: ClientKey) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    budget = "-" if key.daily_budget_usd is None else f"{key.daily_budget_usd:g}"
    limits = f"rpm={key.rpm or '-'} budget={budget}"
    return (
        f"{key.id}\t{key.key_prefix}…\tuser={key.user_id}\ttier={key.tier or '(user)'}\t"
        f"name={key.name or '-'}\t{limits}\t{state}"
    )
