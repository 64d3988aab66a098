"""At exit the event loop closes the async generators left open, kopf's watch streams among them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from thrifty.control import lifecycle

opened: list[AsyncIterator[int]] = []
"""Generators the tests leave open: held here, they are closed by the loop's shutdown, as kopf's
are, not collected earlier."""


@contextlib.asynccontextmanager
async def streaming_block() -> AsyncIterator[int]:
    yield 1


async def infinite_watch() -> AsyncIterator[int]:
    """kopf's shape: a watch stream around an async context manager of its own."""
    block = streaming_block()
    opened.append(block.gen)
    async with block:
        yield 1


async def other_stream() -> AsyncIterator[int]:
    try:
        yield 1
    finally:
        raise ValueError("lost on close")


async def left_open(stream: AsyncIterator[int], inner_first: bool) -> None:
    asyncio.get_running_loop().set_exception_handler(lifecycle.loop_exception)
    opened.append(stream)
    await stream.__anext__()
    if inner_first:
        # The order the loop's shutdown may pick: the inner block closed before the stream.
        await opened[-1].aclose()  # type: ignore[attr-defined]


def test_a_kopf_watch_stream_closed_after_its_block_at_exit_is_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    asyncio.run(left_open(infinite_watch(), inner_first=True))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    said = [r.getMessage() for r in caplog.records if r.name == lifecycle.__name__]
    assert said == [
        "a kopf watch stream was closed with the event loop at exit "
        "(generator didn't stop after athrow())"
    ]


def test_any_other_error_closing_a_generator_is_still_asyncios_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asyncio.run(left_open(other_stream(), inner_first=False))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "asyncio"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "lost on close" in str(errors[0].exc_info[1])
