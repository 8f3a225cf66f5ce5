"""Run the proxy and admin listeners under uvicorn in one event loop, with a graceful drain:
on SIGTERM/SIGINT both stop accepting, in-flight requests finish, the decision log is flushed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import Coroutine, Generator
from typing import Any

import uvicorn

from veil import __version__
from veil.config import TLS, ClientLimits, Config, Listen
from veil.listen import bind_both
from veil.proxy.admin import build_admin_app
from veil.proxy.app import ProxyApp
from veil.proxy.forwarded import ForwardedFor, TrustedProxies
from veil.proxy.h1server import GuardedHTTPProtocol, protocol_class
from veil.proxy.runtime import Runtime
from veil.proxy.tlsinfo import TLSInfoProtocol

log = logging.getLogger("veil")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled once for both listeners by serve()


def tune_gc() -> None:
    """Responses are parsed into many short-lived objects that reference counting frees; the cyclic
    collector only has to find cycles. With the default gen0 threshold (700 allocations) a 1 MB body
    triggers dozens of collections that walk every live object (measured: orjson.loads of a 1.2 MB list
    9.3 ms with the defaults, 6.9 ms with these settings). Start-up objects (policy, caches) are frozen
    out of the collector's view."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _tls_kwargs(tls: TLS | None) -> dict[str, Any]:
    if tls is None:
        return {}
    kw: dict[str, Any] = {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile}
    if tls.client_ca:
        kw["ssl_ca_certs"] = tls.client_ca
        kw["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return kw


def _uvicorn(app: Any, listen: Listen, tls: TLS | None, limits: ClientLimits, listener: str) -> _Server:
    # veil's protocol: uvicorn's httptools protocol with a head deadline and size limit and a bound on
    # unread bodies (veil.proxy.h1server); with TLS it also puts the verified client certificate's
    # subject into the scope (mutual TLS, veil.proxy.tlsinfo).
    base: type[GuardedHTTPProtocol] = TLSInfoProtocol if tls is not None else GuardedHTTPProtocol
    cfg = uvicorn.Config(
        app, host=listen.host, port=listen.port, log_level="warning", access_log=False, lifespan="off",
        loop="auto", server_header=False, date_header=False, timeout_graceful_shutdown=25,
        limit_max_requests=None, http=protocol_class(limits, listener, base),
        ws="none",  # no WebSocket support: the proxy refuses upgrades with a problem (upgrade_refused)
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn takes a float
        log_config=None,  # uvicorn's records go through veil's handler (veil.logs: one line, text or JSON)
        # X-Forwarded-For is read by veil.proxy.forwarded, from `trusted_proxies` only
        proxy_headers=False, **_tls_kwargs(tls),
    )
    return _Server(cfg)


def _with_forwarded(app: Any, config: Config) -> Any:
    trusted = TrustedProxies(config.trusted_proxies)
    return ForwardedFor(app, trusted) if trusted else app


async def serve(config: Config, *, chain_id: str = "main", ready: asyncio.Event | None = None,
                reuse_port: bool = False) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the policy. `reuse_port`: bind both listeners with
    SO_REUSEPORT (one of several worker processes sharing the ports, see veil.proxy.workers)."""
    psock, asock = bind_both(config, reuse_port=reuse_port)  # an address in use: ListenError, nothing started
    try:
        rt = Runtime(config, chain_id=chain_id)
        await rt.start()
    except BaseException:
        psock.close()
        asock.close()
        raise
    tune_gc()
    limits = config.client_limits
    proxy = _uvicorn(_with_forwarded(ProxyApp(rt), config), config.proxy, config.tls, limits, "proxy")
    admin = _uvicorn(_with_forwarded(build_admin_app(rt), config), config.admin, config.admin_tls, limits, "admin")
    loop = asyncio.get_running_loop()

    def stop(*_: Any) -> None:
        proxy.should_exit = True
        admin.should_exit = True

    reloads: set[asyncio.Task[Any]] = set()

    def reload(*_: Any) -> None:
        task = loop.create_task(rt.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        tasks = [asyncio.create_task(proxy.serve([psock])), asyncio.create_task(admin.serve([asock]))]
        while not (proxy.started and admin.started):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        if proxy.started and admin.started:
            log.info("veil %s listening: proxy %s, admin %s, mode %s, policy %s, %d upstream(s)", __version__,
                     config.proxy, config.admin, config.mode,
                     rt.policy.current.version if rt.policy.current else "-", len(config.upstreams))
            if ready is not None:
                ready.set()
        else:
            stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if not (proxy.started and admin.started):
            raise OSError(f"could not listen on {config.proxy} and {config.admin}")
    finally:
        await rt.close()


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (measurably faster), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)
