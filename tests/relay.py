"""A TCP relay the tests control, to cut veil off from PostgreSQL without touching the shared server.

`Relay(target_port)` listens on 127.0.0.1 (its own thread and event loop) and forwards every
connection to the target. `blackhole()` makes it go silent the way a network partition does: bytes in
flight stay where they are, nothing is forwarded either way, new connections are accepted and then hear
nothing (no RST, no FIN, so clients wait for their own timeouts). `restore()` lets the held bytes
through and forwards again. `refuse()` closes the listening socket (connection refused) and
`reset()` drops every open connection.

    with Relay(5432) as relay:
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/test"
        relay.blackhole(); ...; relay.restore()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Relay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self._sock: socket.socket | None = sock
        self._thread.start()
        self._call(self._start())

    # -- control (from the test's thread) ----------------------------------------------------------

    def blackhole(self) -> None:
        self._call(self._set_flowing(False))

    def restore(self) -> None:
        self._call(self._set_flowing(True))
        if self._server is None:
            self._call(self._listen(None))

    def refuse(self) -> None:
        self._call(self._close_server())

    def reset(self) -> None:
        self._call(self._drop_all())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- the relay's own loop ------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen(self._sock)
        self._sock = None

    async def _listen(self, sock: socket.socket | None) -> None:
        if sock is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _set_flowing(self, on: bool) -> None:
        assert self._flowing is not None
        if on:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _drop_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._close_server()
        await self._drop_all()
        others = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # close() cancels every connection
            await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections += 1
        self._writers.add(writer)
        await self._flowing.wait()  # a new connection during a blackhole hears nothing
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        pumps = asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                               return_exceptions=True)
        try:
            await pumps
        except asyncio.CancelledError:
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
            raise
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        while True:
            await self._flowing.wait()
            data = await reader.read(65536)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            await self._flowing.wait()  # read before the blackhole began: held, not lost
            writer.write(data)
            await writer.drain()
