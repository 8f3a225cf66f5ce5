"""`veil keygen [--kind hmac|token|caller] [--out FILE]`: a fresh 256-bit key, hex encoded.

With --out the key is written to a new owner-only file (mode 0600; its directory is created 0700) and
nothing secret is printed; without it the key goes to standard output. For `--kind caller` the line to
paste into the caller block of a policy (`key sha256:<hex>`) is printed too: the policy holds only
the hash, the caller sends the key in `Veil-Key`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from veil.errors import VeilError
from veil.keys import generate_key, sha256_hex, write_private_file

KINDS = {
    "hmac": "keys.store / keys.audit / keys.pseudonym / keys.hash",
    "token": "admin.tokens.<scope>",
    "caller": "a caller's Veil-Key",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="generate a strong key (hmac key, admin token or caller key)")
    p.add_argument("--kind", choices=sorted(KINDS), default="hmac",
                   help="hmac (veil's keys), token (admin scope token) or caller (prints the policy line)")
    p.add_argument("--out", metavar="FILE", help="write the key to FILE (owner-only, refuses to overwrite)")
    p.add_argument("--force", action="store_true", help="with --out: replace an existing file")
    p.set_defaults(func=run)


def policy_line(key: str) -> str:
    """The caller-block line that authenticates `key` (only its SHA-256 goes into the policy)."""
    return f"key sha256:{sha256_hex(key)}"


def run(args: argparse.Namespace) -> int:
    key = generate_key()
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.force:
            raise VeilError(f"{out} exists; pass --force to replace it", code="key_exists")
        if not out.parent.exists():
            out.parent.mkdir(mode=0o700, parents=True)
        try:
            write_private_file(out, key + "\n")
        except OSError as exc:
            raise VeilError(f"cannot write {out}: {exc.strerror}", code="key_write_failed") from exc
        ref = f"file:{out.resolve()}"
        print(f"wrote a 256-bit {args.kind} key to {out} (mode 600); use it as {KINDS[args.kind]}: {ref}",
              file=sys.stderr)
    else:
        print(key)
        if sys.stdout.isatty() and os.name == "posix":
            print("(printed to the terminal: prefer --out FILE so the key stays out of your scrollback)",
                  file=sys.stderr)
    if args.kind == "caller":
        print(policy_line(key))
    return 0
