"""A TCP relay between veil and PostgreSQL that a test can cut, to make a database outage without
touching the shared server. It runs its own event loop in a thread.

    relay = Relay(("127.0.0.1", 5432)); relay.start()    # relay.port forwards to the server
    relay.cut()       # every open connection reset, new ones refused (the server is "down")
    relay.cut(hang=True)  # open connections and new ones accepted but never answered (a black hole)
    relay.restore()   # forwarding again
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.conftest import free_port


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="pg-relay")
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._mode = "open"  # open | refuse | hang
        self.accepted = 0

    def start(self) -> Relay:
        self._thread.start()
        self._call(self._listen())
        return self

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "refuse":
            writer.transport.abort()
            return
        self._conns.add(writer)
        if self._mode == "hang":
            return  # never forwarded, never answered
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns.add(up_w)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self._mode == "refuse":
                        break
                    if self._mode == "hang":
                        continue  # swallowed: the other side waits
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns.discard(writer)
        self._conns.discard(up_w)

    async def _abort_all(self) -> None:
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    def cut(self, *, hang: bool = False) -> None:
        """The database is gone: open connections reset (or, with hang, silent), new ones refused
        (or accepted and never answered)."""
        self._mode = "hang" if hang else "refuse"
        if not hang:
            self._call(self._abort_all())

    def restore(self) -> None:
        if self._mode == "hang":
            self._call(self._abort_all())  # the silent connections end; clients reconnect
        self._mode = "open"

    def stop(self) -> None:
        self._mode = "refuse"
        self._call(self._abort_all())
        if self._server is not None:
            self._server.close()
            self._call(self._server.wait_closed())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
