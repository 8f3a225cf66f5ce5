"""`veil playground PATH...`: a local page for trying a policy set in the browser.

    veil playground policies/ [--port 8790] [--cases policies/tests/playground.yaml]

Edit the policy files, an example request (method, path, caller, purpose, headers such as Sec-GPC),
consent states and the upstream's response body; on every edit the page shows the decision and its
reason, the response that would leave, a diff against the upstream body, and each field's fate with the
policy line behind it (the engine of `veil explain`). Check errors appear at their line and column.
"Save as test case" adds the example, with what veil decided, to the case file (`veil test` runs it);
"Save policy files" writes the edited files back.

Listens on 127.0.0.1 only (nothing leaves the machine; no network access is needed). Exit 2 on usage
errors, 1 when the policy files cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8790


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "playground", help="try a policy set in a local web page", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; "
                   "0 picks a free one)")
    p.add_argument("--cases", metavar="FILE", help="the test file saved cases go to "
                   "(default: tests/playground.yaml in the first policy directory)")
    p.set_defaults(func=run)


def case_file_for(paths: list[str], cases: str | None) -> Path:
    if cases:
        return Path(cases)
    first = Path(paths[0])
    base = first if first.is_dir() else first.parent
    return base / "tests" / "playground.yaml"


def run(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from veil.playground.app import build_app
    from veil.playground.workspace import Workspace, WorkspaceError

    if not 0 <= args.port <= 65535:
        print("veil playground: --port must be 0-65535", file=sys.stderr)
        return 2
    try:
        workspace = Workspace(args.paths)
    except WorkspaceError as exc:
        print(f"veil playground: {exc.message}", file=sys.stderr)
        return 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
    except OSError as exc:
        print(f"veil playground: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    app = build_app(workspace, case_file=case_file_for(args.paths, args.cases), hosts=hosts)
    print(f"veil playground: http://127.0.0.1:{port}/  ({len(workspace.names)} policy file(s); Ctrl-C stops)",
          flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0
