"""An app's own retry helpers, in every form the targets support. No OpenTelemetry here.

Tests load a fresh copy of this file under a new module name each time (`app_module` in `tests/support/_targets_support.py`),
so that a test can instrument before or after the module is imported. Waits go through `sleep`/`async_sleep`, which
the tests point at a fake clock.
"""

import asyncio
import functools
import time


def sleep(seconds):
    time.sleep(seconds)


async def async_sleep(seconds):
    await asyncio.sleep(seconds)


def _loop(fn, args, kwargs, retries, delay):
    last = None
    for attempt in range(1, retries + 2):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            last = exc
            if attempt <= retries:
                sleep(delay * attempt)
    raise last


async def _async_loop(fn, args, kwargs, retries, delay):
    last = None
    for attempt in range(1, retries + 2):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            last = exc
            if attempt <= retries:
                await async_sleep(delay * attempt)
    raise last


class Retrier:
    """The issue's Retrier, plus async, static and class method forms."""

    def __init__(self, max_retries=3, delay=0.1):
        self._max = max_retries
        self._delay = delay

    def execute(self, fn, *args, **kwargs):
        return _loop(fn, args, kwargs, self._max, self._delay)

    async def execute_async(self, fn, *args, **kwargs):
        return await _async_loop(fn, args, kwargs, self._max, self._delay)

    @staticmethod
    def static_execute(fn, *args, **kwargs):
        return _loop(fn, args, kwargs, 2, 0.1)

    @classmethod
    def class_execute(cls, fn, *args, **kwargs):
        return _loop(fn, args, kwargs, 2, 0.1)


def retry_call(fn, *args, **kwargs):
    """A module-level helper."""
    return _loop(fn, args, kwargs, 2, 0.1)


def run_with_policy(should_retry, operation, retries=2):
    """The attempted callable is not the first callable argument: configure it as ``:operation``."""
    for attempt in range(retries + 1):
        try:
            return operation()
        except Exception as exc:
            if attempt == retries or not should_retry(exc):
                raise


RECEIVED = []


def call_once(fn):
    """Records what it was handed (the tests check it is the app's own callable when nothing records)."""
    RECEIVED.append(fn)
    return fn()


def threaded_retry_call(fn):
    """Runs each attempt in a worker thread."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return _loop(lambda: pool.submit(fn).result(), (), {}, 2, 0.1)


def fallback_call(fn, fallback):
    """Gives up quietly: returns `fallback` when every attempt failed."""
    try:
        return _loop(fn, (), {}, 1, 0.1)
    except Exception:
        return fallback


def retry(fn=None, *, times=3, delay=0.1):
    """A decorator usable bare (``@retry``) or with arguments (``@retry(times=2)``), sync and async."""
    if fn is None:
        return functools.partial(retry, times=times, delay=delay)
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):
            return await _async_loop(fn, args, kwargs, times - 1, delay)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return _loop(fn, args, kwargs, times - 1, delay)

    return wrapper


def with_retries(times=3, delay=0.1, on=Exception):
    """A decorator factory only: ``@with_retries(times=2, on=ConnectionError)``."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return _loop(func, args, kwargs, times - 1, delay)

        return wrapper

    return decorate


class Client:
    """Methods decorated by the helpers above, as apps write them."""

    def __init__(self, flaky):
        self.flaky = flaky

    @retry(times=3)
    def get(self, key):
        return self.flaky(key)


class SubRetrier(Retrier):
    """Inherits `execute`: a target must name the class that defines it."""


class Odd:
    """A class attribute that is callable but neither a function nor a static or class method."""

    helper = functools.partial(retry_call)
