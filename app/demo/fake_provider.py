"""The fake provider's public API and command line (`python -m app.demo.fake_provider`).

Examples:
    python -m app.demo.fake_provider --demo --port 9100
    python -m app.demo.fake_provider --port 9100 --keys k1,k2 --rps 20
    python -m app.demo.fake_provider --port 9100 --config fake.json

A config file has FakeProviderConfig's shape: {"keys": {"k1": {"mode": "ok", "rps": 5}},
"models": [...] | null, "accept_any_key": false, "default": {...}}; each key's fields are
applied on top of "default". Shortcut flags (--rps, --latency-ms, ...) change the default
and the keys named by --keys, not the keys of a config file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from app.demo.fake import (
    FakeProvider,
    FakeProviderConfig,
    FakeProviderThread,
    KeyBehaviour,
    config_from_dict,
    demo_config,
    run_fake_provider,
    start_fake_provider,
)
from app.demo.fake.config import MODES

__all__ = [
    "FakeProvider",
    "FakeProviderConfig",
    "FakeProviderThread",
    "KeyBehaviour",
    "build_config",
    "build_parser",
    "config_from_dict",
    "demo_config",
    "main",
    "run_fake_provider",
    "start_fake_provider",
]

# flag name -> KeyBehaviour field, for the shortcut flags
_SHORTCUTS: dict[str, tuple[str, type]] = {
    "mode": ("mode", str),
    "rps": ("rps", float),
    "rpm": ("rpm", float),
    "latency_ms": ("latency_ms", float),
    "ttft_ms": ("ttft_ms", float),
    "chunk_interval_ms": ("chunk_interval_ms", float),
    "chunks": ("chunks", int),
    "retry_after_s": ("retry_after_s", float),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.demo.fake_provider", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="JSON file shaped like FakeProviderConfig")
    source.add_argument("--demo", action="store_true", help="the `make run` demo scenario")
    parser.add_argument("--keys", default="", help="comma-separated keys to add")
    parser.add_argument("--models", help="comma-separated models; 'any' accepts every model")
    parser.add_argument("--accept-any-key", action="store_true")
    parser.add_argument("--shared-rps", type=float, help="account-wide bucket all keys share")
    parser.add_argument("--shared-rpm", type=float, help="account-wide bucket all keys share")
    for flag, (_, kind) in _SHORTCUTS.items():
        choices = sorted(MODES) if flag == "mode" else None
        parser.add_argument(f"--{flag.replace('_', '-')}", type=kind, choices=choices)
    return parser


def build_config(args: argparse.Namespace) -> FakeProviderConfig:
    """The config the flags describe: a file or the demo, then the shortcut flags on top."""
    if args.config is not None:
        config = config_from_dict(orjson.loads(args.config.read_bytes()))
    else:
        config = demo_config() if args.demo else FakeProviderConfig()
    changes: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, (field, _) in _SHORTCUTS.items()
        if getattr(args, flag) is not None
    }
    config.default = config.default.with_changes(changes)
    for key in filter(None, (k.strip() for k in args.keys.split(","))):
        base = config.keys.get(key, config.default)
        config.keys[key] = base.with_changes(changes)
    if args.models is not None:
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        config.models = None if names == ["any"] else names
    config.accept_any_key = config.accept_any_key or args.accept_any_key
    config.shared_rps = args.shared_rps or config.shared_rps
    config.shared_rpm = args.shared_rpm or config.shared_rpm
    return config


async def _serve(config: FakeProviderConfig, host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with run_fake_provider(config, host, port) as fake:
        print(f"fake provider listening on {fake.base_url}", flush=True)
        await stopping.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = build_config(args)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_loop_factory()) as r:
        r.run(_serve(config, args.host, args.port))


if __name__ == "__main__":
    main()
