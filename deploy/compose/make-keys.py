"""Create the trial's keys and admin tokens once (mode 0600), never overwriting existing ones.

Run by the veil-keys service in deploy/docker-compose.yml as uid 10001, so veil (same uid) can read
them and nobody else can. Prints file names only, never key material.
"""

from __future__ import annotations

import sys
from pathlib import Path

from veil.keys import generate_key, write_private_file

NAMES = (
    "store.key", "audit.key", "pseudonym.key", "hash.key",
    "admin-read.token", "admin-consent.token", "admin-audit.token", "admin-reload.token",
)


def main(directory: str) -> int:
    root = Path(directory)
    for name in NAMES:
        path = root / name
        if path.exists():
            print(f"kept {path}")
            continue
        write_private_file(path, generate_key() + "\n")
        print(f"created {path}")
    root.chmod(0o700)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/veil/keys"))
