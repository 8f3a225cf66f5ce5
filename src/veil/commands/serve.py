"""`veil serve --config veil.yaml`: run the proxy and admin listeners.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when veil cannot start (invalid config or
policy, a key that cannot be read, ...) or a worker died, 2 on usage errors, 3 when a listener cannot
bind its address (in use, not permitted). A start failure is one log line (text or JSON, as `log`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

from veil import logs
from veil.config import LOG_FORMATS, load_config
from veil.errors import Diagnostics, VeilError

log = logging.getLogger("veil.serve")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the enforcing proxy and its admin listener")
    p.add_argument("--config", required=True, help="path to veil.yaml")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: config workers)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                   help="process log format (default: config log.format, else text)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from veil.listen import EXIT_LISTEN, ListenError

    logs.configure(args.log_format or "text")
    try:
        config = load_config(args.config)
    except VeilError as exc:
        log.error("cannot start: %s", exc)
        return 1
    if args.log_format:
        config = dataclasses.replace(config, log_format=args.log_format)  # the workers read it from here
    logs.configure(config.log_format, config.log_level)
    workers = args.workers or config.workers
    try:
        if workers > 1:
            from veil.proxy.workers import run_workers

            return run_workers(config, workers)
        from veil.proxy.server import run_async, serve

        run_async(serve(config, chain_id=os.environ.get("VEIL_CHAIN_ID", "main")))
    except ListenError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_LISTEN
    except Diagnostics as exc:
        log.error("cannot start: the policy is invalid: %s", exc.one_line())
        return 1
    except (VeilError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
