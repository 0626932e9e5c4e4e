"""`make bench-peers` (optional): LiteLLM proxy and Portkey's gateway next to keypool.

Both peers are configured with the same fake keys as one load-balanced model and run
scenarios 1 (added latency) and 2 (throughput) next to direct / passthrough / gateway.
Installs into git-ignored folders: bench/.venv-litellm (PyPI `litellm[proxy]`) and
bench/.peers/portkey (npm `@portkey-ai/gateway`, `@hono/node-server` pinned to 1.13.x).
Writes bench/results-peers.md and bench/results-peers.json.

    python -m bench.peers [--quick] [--skip litellm,portkey] [--no-gateway]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import s1_latency, s2_throughput
from bench.common import OPENAI, Ctx, Endpoint, Section, Stack, body, chat_endpoints, describe
from bench.procs import (
    PYTHON,
    SERVER_CORE,
    Server,
    Servers,
    free_port,
    install_cleanup,
    pin_self_to_loadgen_core,
    start,
    stop_all,
)
from bench.report import markdown, meta, write
from bench.servers import clean_env, fake_config, keys, start_fake, start_gateway, start_passthrough
from bench.wrk import ensure_wrk, wrk_version

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".venv-litellm"
PORTKEY_DIR = BENCH / ".peers" / "portkey"
PORTKEY_VERSION = "1.15.2"
MASTER_KEY = "sk-bench-master"
PRELOAD = """// Force every listening socket onto 127.0.0.1 (Portkey listens on all interfaces).
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === 'object') {
    args[0] = { ...args[0], host: '127.0.0.1' };
  } else if (args.length >= 2 && (args[1] === undefined || typeof args[1] === 'string')) {
    args[1] = '127.0.0.1';
  } else {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
"""


def setup_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        subprocess.run([PYTHON, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            check=True,
            timeout=1800,
        )
    return exe


def setup_portkey() -> Path:
    entry = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    (PORTKEY_DIR / "preload.cjs").write_text(PRELOAD)
    if not entry.exists():
        package = {
            "name": "keypool-bench-portkey",
            "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
            "overrides": {"@hono/node-server": "~1.13.0"},
        }
        (PORTKEY_DIR / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=PORTKEY_DIR, check=True, timeout=900
        )
    return entry


def start_litellm(group: Servers, fake: Server, names: list[str], log_dir: Path) -> Server:
    exe = setup_litellm()
    port = free_port()
    deployments = [
        {
            "model_name": "fake-small",
            "litellm_params": {
                "model": "openai/fake-small",
                "api_base": f"{fake.base}/v1",
                "api_key": key,
            },
            "model_info": {
                "id": f"fake-{i}",
                "input_cost_per_token": 1e-7,
                "output_cost_per_token": 2e-7,
            },
        }
        for i, key in enumerate(names)
    ]
    config = {
        "model_list": deployments,
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": MASTER_KEY},
    }
    cfg = log_dir / f"litellm-{port}.yaml"  # JSON is valid YAML
    cfg.write_text(json.dumps(config, indent=1))
    env = clean_env(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
        }
    )
    argv = [
        str(exe),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return group.add(
        start(
            "litellm",
            argv,
            port=port,
            log_dir=log_dir,
            core=SERVER_CORE,
            env=env,
            ready_path="/health/liveliness",
            timeout=120,
        )
    )


def start_portkey(group: Servers, log_dir: Path) -> Server:
    entry = setup_portkey()
    port = free_port()
    argv = [
        "node",
        "--require",
        str(PORTKEY_DIR / "preload.cjs"),
        str(entry),
        f"--port={port}",
        "--headless",
    ]
    return group.add(
        start(
            "portkey",
            argv,
            port=port,
            log_dir=log_dir,
            core=SERVER_CORE,
            env=clean_env({"NODE_ENV": "production"}),
            ready_path="/",
            timeout=60,
        )
    )


def portkey_header(fake: Server, names: list[str]) -> str:
    targets = [
        {"provider": "openai", "api_key": k, "custom_host": f"{fake.base}/v1", "weight": 1}
        for k in names
    ]
    return json.dumps({"strategy": {"mode": "loadbalance"}, "targets": targets})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated peers to skip")
    parser.add_argument("--no-gateway", action="store_true", help="leave keypool out")
    parser.add_argument("--out-dir", type=Path, default=BENCH)
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    install_cleanup()
    pin_self_to_loadgen_core()
    wrk_path = ensure_wrk()
    ctx = Ctx(quick=args.quick, raw_dir=args.out_dir / "results.raw" / "peers", wrk_path=wrk_path)
    names = keys(4)
    t0 = time.monotonic()
    lat, thr = s1_latency.section(), s2_throughput.section(ctx)
    try:
        with Servers() as group:
            st = Stack(key_names=names)
            fake = st.servers["fake"] = start_fake(group, fake_config(names), ctx.raw_dir)
            starters: dict[str, Callable[[], Server]] = {
                "passthrough": lambda: start_passthrough(group, fake, names, ctx.raw_dir),
                "gateway": lambda: start_gateway(group, fake, names, ctx.raw_dir),
                "litellm": lambda: start_litellm(group, fake, names, ctx.raw_dir),
                "portkey": lambda: start_portkey(group, ctx.raw_dir),
            }
            if args.no_gateway:
                skip.add("gateway")
            for name, starter in starters.items():
                if name in skip:
                    continue
                try:
                    st.servers[name] = starter()
                except Exception as exc:
                    st.errors[name] = describe(exc)
            endpoints = [
                ep
                for ep in chat_endpoints()
                if ep.server in ("direct", "passthrough")
                or (ep.label == "gateway /v1" and "gateway" not in skip)
            ]
            if "litellm" not in skip:
                endpoints.append(
                    Endpoint(
                        "litellm /v1",
                        "litellm",
                        "/v1/chat/completions",
                        body(OPENAI),
                        headers=(("Authorization", f"Bearer {MASTER_KEY}"),),
                    )
                )
            if "portkey" not in skip:
                endpoints.append(
                    Endpoint(
                        "portkey /v1",
                        "portkey",
                        "/v1/chat/completions",
                        body(OPENAI),
                        headers=(("x-portkey-config", portkey_header(fake, names)),),
                    )
                )
            s1_latency.measure_all(ctx, st, endpoints, lat)
            s2_throughput.measure_all(ctx, st, endpoints, thr)
    finally:
        stop_all()
    sections: list[Section] = [lat, thr]
    tool = f"{wrk_version(wrk_path)} -t1" if wrk_path else "aiohttp closed loop (no wrk)"
    info = meta(
        args.quick,
        tool,
        time.monotonic() - t0,
        [
            "peers: LiteLLM proxy (1 uvicorn worker, simple-shuffle over one deployment per "
            "key) and Portkey gateway (node, loadbalance config header) on the server core"
        ],
    )
    md, js = write(args.out_dir, info, sections, stem="results-peers")
    print(markdown(info, sections))
    print(f"\nwrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
