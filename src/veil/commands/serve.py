"""`veil serve --config veil.yaml`: run the proxy and admin listeners."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from veil.config import load_config
from veil.errors import Diagnostics


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the enforcing proxy and its admin listener")
    p.add_argument("--config", required=True, help="path to veil.yaml")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: config workers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    config = load_config(args.config)
    workers = args.workers or config.workers
    from veil.proxy.server import run_async, serve

    if workers > 1:
        from veil.proxy.workers import run_workers

        return run_workers(config, workers)
    try:
        run_async(serve(config, chain_id=os.environ.get("VEIL_CHAIN_ID", "main")))
    except Diagnostics as exc:
        print(f"veil serve: the policy is invalid:\n{exc.render(20)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"veil serve: error: {exc}", file=sys.stderr)
        return 1
    return 0
