"""A module whose own top-level code uses its retry helpers while it is being imported. No OpenTelemetry here."""

import asyncio

counts = {}


def flaky(name, failures):
    counts[name] = counts.get(name, 0) + 1
    if counts[name] <= failures:
        raise ConnectionError(f"{name} down")
    return name


def first():
    return flaky("first", 1)


def second():
    return flaky("second", 2)


def _loop(fn, args):
    for _ in range(3):
        try:
            return fn(*args)
        except Exception:
            pass
    return fn(*args)


class Retrier:
    def execute(self, fn, *args):
        return _loop(fn, args)


def retry_call(fn, *args):
    return _loop(fn, args)


AT_IMPORT = (Retrier().execute(first), retry_call(second))


class Model:
    """Stands for a pydantic model: the helper checks it with ``issubclass`` and applies it to the result."""

    def __init__(self, value):
        self.value = value


class Client:
    """An SDK client whose ``request`` takes the class to cast the result to, and the operation, in either order."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def operation(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("busy")
        return self.calls

    def request(self, cast_to, fn):
        if not issubclass(cast_to, Model):
            raise TypeError("cast_to must be a Model")
        return _loop(lambda: cast_to(fn()), ())

    def request_fn_first(self, fn, cast_to):
        return self.request(cast_to, fn)

    async def arequest(self, cast_to, fn):
        if not issubclass(cast_to, Model):
            raise TypeError("cast_to must be a Model")
        for _ in range(3):
            try:
                return cast_to(await fn())
            except ConnectionError:
                await asyncio.sleep(0)
        return cast_to(await fn())

    async def arequest_fn_first(self, fn, cast_to):
        return await self.arequest(cast_to, fn)

    def observe(self, cast_to, fn):
        """What a helper may ask of its arguments."""
        return (
            isinstance(cast_to, type),
            issubclass(cast_to, Model),
            cast_to is Model,
            isinstance(fn, type(self.observe)),
            callable(fn),
            fn == self.operation,
            hash(fn) == hash(self.operation),
            fn.__name__,
            fn.__self__ is self,
            getattr(fn, "__doc__", None),
        )

    def with_classes_only(self, cast_to, error=ConnectionError):
        return cast_to is Model and error is ConnectionError

    def guard_with_classes_only(self, cast_to):
        return cast_to is Model
