"""An app's own stream helpers (targets in the tests, never edited): each re-creates the stream it reads from when
it breaks with a retried error, as ``google.api_core.retry.retry_target_stream`` does. Tests point `sleep` and
`async_sleep` at a fake clock."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

RETRIED: tuple[type[Exception], ...] = (ConnectionError, TimeoutError)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def stream_with_retry(make_stream: Callable[..., Iterator[Any]], *args: Any, attempts: int = 3, delay: float = 0.1) -> Iterator[Any]:
    for attempt in range(1, attempts + 1):
        try:
            return (yield from make_stream(*args))
        except RETRIED:
            if attempt == attempts:
                raise
            sleep(delay * attempt)
    return None


async def astream_with_retry(
    make_stream: Callable[..., Any], *args: Any, attempts: int = 3, delay: float = 0.1
) -> AsyncIterator[Any]:
    for attempt in range(1, attempts + 1):
        try:
            stream = make_stream(*args)
            if asyncio.iscoroutine(stream):
                stream = await stream
            async for item in stream:
                yield item
            return
        except RETRIED:
            if attempt == attempts:
                raise
            await async_sleep(delay * attempt)


def retry_stream(attempts: int = 3, delay: float = 0.1) -> Callable[[Callable[..., Iterator[Any]]], Callable[..., Iterator[Any]]]:
    """A decorator factory: the decorated generator function is re-run when its stream breaks."""

    def decorate(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for attempt in range(1, attempts + 1):
                try:
                    return (yield from fn(*args, **kwargs))
                except RETRIED:
                    if attempt == attempts:
                        raise
                    sleep(delay * attempt)
            return None

        return wrapper

    return decorate


def aretry_stream(attempts: int = 3, delay: float = 0.1) -> Callable[[Callable[..., AsyncIterator[Any]]], Callable[..., AsyncIterator[Any]]]:
    def decorate(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            for attempt in range(1, attempts + 1):
                try:
                    async for item in fn(*args, **kwargs):
                        yield item
                    return
                except RETRIED:
                    if attempt == attempts:
                        raise
                    await async_sleep(delay * attempt)

        return wrapper

    return decorate
