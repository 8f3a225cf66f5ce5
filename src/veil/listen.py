"""Binding the proxy and admin listeners before anything else starts, so that an address in use is
one clear error (`ListenError`, exit code 3 from `veil serve`) instead of a server that half starts.

`veil serve --workers N` binds with SO_REUSEPORT in each worker (the kernel spreads connections);
the supervisor first checks that the addresses are free (`check_free`), so a clash with another
program is reported once, before any worker starts.
"""

from __future__ import annotations

import errno
import socket

from veil.config import Config, Listen
from veil.errors import VeilError

EXIT_LISTEN = 3  # `veil serve` exit code: a listener could not bind its address


class ListenError(VeilError):
    code = "listen_failed"

    def __init__(self, key: str, listen: Listen, exc: OSError) -> None:
        why = {
            errno.EADDRINUSE: "the address is already in use (another veil, or another program)",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
            errno.EADDRNOTAVAIL: "the address is not one of this machine's",
        }.get(exc.errno or 0, exc.strerror or type(exc).__name__)
        super().__init__(f"{key}: cannot listen on {listen}: {why}")
        self.key = key


def bind(listen: Listen, key: str, *, reuse_port: bool = False, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on `listen` (SO_REUSEADDR; SO_REUSEPORT when `reuse_port`)."""
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise VeilError(f"{key}: cannot share {listen} between workers: SO_REUSEPORT is not available here",
                        code="listen_failed")
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise VeilError(f"{key}: cannot listen on {listen}: unknown host", code="listen_failed") from exc
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ListenError(key, listen, exc) from exc
    return sock


def bind_both(config: Config, *, reuse_port: bool = False) -> tuple[socket.socket, socket.socket]:
    proxy = bind(config.proxy, "listen.proxy", reuse_port=reuse_port)
    try:
        admin = bind(config.admin, "listen.admin", reuse_port=reuse_port)
    except BaseException:
        proxy.close()
        raise
    return proxy, admin


def check_free(config: Config) -> None:
    """Raise ListenError when a listener's address cannot be bound now (the sockets are closed again).
    Without SO_REUSEPORT: another veil already serving these ports with SO_REUSEPORT would otherwise
    let the workers join it and share its connections."""
    for sock in bind_both(config, reuse_port=False):
        sock.close()
