"""The request body as veil reads it: whole, or an error naming why not (never a quiet end)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from veil.config import ClientLimits
from veil.proxy.reqbody import RequestBody, RequestBodyError

LIMITS = ClientLimits(body_timeout=1.0, body_idle_timeout=0.2, buffer_bytes=10, max_body_bytes=100)


def receiver(*messages: dict[str, Any] | float) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI `receive` handing out `messages` in order; a number is a stall of that many seconds,
    and after the last message the client is silent."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        while queue and isinstance(queue[0], float):
            await asyncio.sleep(queue.pop(0))  # type: ignore[arg-type]
        if not queue:
            await asyncio.sleep(3600)
        msg = queue.pop(0)
        assert isinstance(msg, dict)
        return msg

    return receive


def part(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def drain(body: RequestBody) -> bytes:
    return b"".join([chunk async for chunk in body])


async def test_a_small_body_is_read_whole_before_the_upstream() -> None:
    body = RequestBody(receiver(part(b"amount="), part(b""), part(b"10", more=False)), LIMITS)
    assert await body.read_ahead() == b"amount=10"


async def test_a_larger_body_is_streamed_with_what_was_read_first() -> None:
    body = RequestBody(receiver(part(b"0123456"), part(b"789abc"), part(b"def", more=False)), LIMITS)
    ahead = await body.read_ahead()
    assert ahead is body
    assert await drain(body) == b"0123456789abcdef"


async def test_a_declared_length_over_the_buffer_is_streamed_at_once() -> None:
    body = RequestBody(receiver(part(b"x" * 50, more=False)), LIMITS, declared=50)
    assert await body.read_ahead() is body
    assert await drain(body) == b"x" * 50


@pytest.mark.parametrize("messages,reason", [
    ((part(b"amount=1000"), {"type": "http.disconnect"}), "request_aborted"),
    ((part(b"amount="), 0.5), "request_timeout"),  # stalls longer than the idle timeout
    ((part(b"a"), 0.15, part(b"b"), 0.15, part(b"c"), 0.15, part(b"d"), 0.15, part(b"e"), 0.15, part(b"f"), 0.15,
      part(b"g")), "request_timeout"),  # each gap is short, the whole takes longer than body_timeout
    (tuple(part(b"y" * 30) for _ in range(4)), "request_body_too_large"),
])
async def test_a_body_that_does_not_arrive_whole_raises(messages: tuple[Any, ...], reason: str) -> None:
    for read_ahead in (True, False):
        body = RequestBody(receiver(*messages), LIMITS)
        with pytest.raises(RequestBodyError) as info:
            if read_ahead:
                await body.read_ahead()
            await drain(body)
        assert info.value.reason == reason and body.error is info.value
        with pytest.raises(RequestBodyError):  # and keeps failing: it never ends quietly afterwards
            await drain(body)


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    body = RequestBody(receiver(), LIMITS, declared=101)
    with pytest.raises(RequestBodyError) as info:
        await body.read_ahead()
    assert info.value.reason == "request_body_too_large"
