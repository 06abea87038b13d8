"""Patching shared by every instrumentor and configured target: one patch per patched attribute, undone exactly.
Several adapters can hook the same attribute (stamina on tenacity, a target on a library's method), so each patched
attribute holds one plain function (`_HookPoint`, cheaper than a wrapt proxy on every access) with their wrappers as
layers; hooks marked ``deferred`` are applied only once something records, so with no SDK a call pays for its entry
point alone. The rules, and the measurements behind them, are in docs/patching.md. Usage, in an adapter::

    def patch(self, patches: Patches) -> None:
        patches.wrap(Library, "call", self._call, enabled=self.telemetry.may_record)
        patches.wrap(Library, "_on_failure", self._failed, enabled=any_active_call, deferred=True)
    # uninstrument: patches.restore()
"""

from __future__ import annotations

import bisect
import functools
import inspect
import itertools
import logging
import threading
from collections.abc import Callable
from types import MethodType
from typing import Any, NamedTuple

from otel_resilience.core._safety import report_internal_error

_logger = logging.getLogger("otel_resilience")

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]
"""``wrapper(wrapped, instance, args, kwargs)``, as wrapt calls it."""
Enabled = Callable[[], object] | None
"""Asked on every call before the wrapper (ideally a C callable such as ``ContextVar.get``); falsy: the wrapper is
skipped. None: always on."""


class _Layer(NamedTuple):
    """One subscriber's wrapper inside a patch, with `below`: what it calls as ``wrapped`` (the layers under it, then
    the original)."""

    wrapper: Wrapper
    enabled: Enabled
    below: Callable[..., Any]


def _enabled_check_failed() -> bool:
    """An error of ours in an `enabled` check must not reach the app: it counts as "off" (logged once)."""
    report_internal_error("instrumentation enabled check")
    return False


def _layered(
    original: Callable[..., Any], bind: bool, layers: tuple[_Layer, ...]
) -> tuple[Callable[..., Any], Callable[[tuple[_Layer, ...]], None]]:
    """A function standing in for `original` that runs `layers` (outermost first): the first whose `enabled` says yes
    gets the call, with the layers under it as ``wrapped``; when none does, `original` is called directly. `bind`:
    the function sits in a class, so its first argument is the instance. Returns the function and the setter of its
    layers. Coroutine functions stay coroutine functions (libraries and apps check with ``inspect``), hence the two
    twins below; they are kept side by side and inline (no helper call) because this is every patched call's path."""
    if inspect.iscoroutinefunction(original):

        async def patched_async(*args: Any, **kwargs: Any) -> Any:
            for wrapper, enabled, below in layers:
                try:
                    on = enabled is None or enabled()
                except Exception:
                    on = _enabled_check_failed()
                if on:
                    if not bind:
                        return await wrapper(below, None, args, kwargs)
                    if args:
                        return await wrapper(MethodType(below, args[0]), args[0], args[1:], kwargs)
                    break  # no instance: the original raises its own TypeError
            return await original(*args, **kwargs)

        patched: Callable[..., Any] = patched_async
    else:

        def patched_sync(*args: Any, **kwargs: Any) -> Any:
            for wrapper, enabled, below in layers:
                try:
                    on = enabled is None or enabled()
                except Exception:
                    on = _enabled_check_failed()
                if on:
                    if not bind:
                        return wrapper(below, None, args, kwargs)
                    if args:
                        return wrapper(MethodType(below, args[0]), args[0], args[1:], kwargs)
                    break  # no instance: the original raises its own TypeError
            return original(*args, **kwargs)

        patched = patched_sync

    def set_layers(new: tuple[_Layer, ...]) -> None:
        nonlocal layers
        layers = new

    return functools.wraps(original)(patched), set_layers


_DECLARED = itertools.count()
"""Numbers the subscriptions in the order adapters declare them: the order of the layers in a patch."""


class _Subscription:
    """One adapter's wrapper on one hook point (compared by identity: two adapters may subscribe the same wrapper)."""

    __slots__ = ("wrapper", "enabled", "order")

    def __init__(self, wrapper: Wrapper, enabled: Enabled) -> None:
        self.wrapper = wrapper
        self.enabled = enabled
        self.order = next(_DECLARED)


class _HookPoint:
    """The one patch of ``owner.name``: the original object, the object we put there, and the subscribers' layers."""

    def __init__(self, owner: Any, name: str) -> None:
        self.owner = owner
        self.name = name
        self.original = vars(owner)[name]
        original = self.original
        function = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        bind = isinstance(original, classmethod) or (inspect.isclass(owner) and not isinstance(original, staticmethod))
        self._function = function
        self._bind = bind
        patched, self._set_layers = _layered(function, bind, ())
        self.installed: Any = type(original)(patched) if isinstance(original, (staticmethod, classmethod)) else patched
        self.subscriptions: list[_Subscription] = []  # innermost (declared first) first

    def is_reachable(self) -> bool:
        """Our patch is still what the attribute holds, or under somebody's layer on top of it."""
        current: Any = vars(self.owner).get(self.name)
        for _ in range(64):  # a chain of wrappers, bounded: __wrapped__ can loop
            if current is self.installed:
                return True
            if isinstance(current, (staticmethod, classmethod)):
                current = current.__func__
                if isinstance(self.installed, (staticmethod, classmethod)) and current is self.installed.__func__:
                    return True
            current = getattr(current, "__wrapped__", None)
            if current is None:
                return False
        return False

    def _rebuild(self) -> None:
        """Give the patch its layers: each calls, as ``wrapped``, a fixed chain of the layers under it."""
        below: Callable[..., Any] = self._function
        built: list[_Layer] = []
        for subscription in self.subscriptions:  # innermost first
            built.insert(0, _Layer(subscription.wrapper, subscription.enabled, below))
            below = _layered(self._function, self._bind, tuple(built))[0]
        self._set_layers(tuple(built))

    def subscribe(self, subscription: _Subscription) -> None:
        if not self.subscriptions and vars(self.owner).get(self.name) is self.original:
            setattr(self.owner, self.name, self.installed)
        bisect.insort(self.subscriptions, subscription, key=lambda s: s.order)
        self._rebuild()

    def unsubscribe(self, subscription: _Subscription) -> bool:
        """False when the last subscriber left but the original could not go back (a layer of somebody else's sits
        on ours): ours stays, calling straight through."""
        self.subscriptions.remove(subscription)
        self._rebuild()
        if self.subscriptions:
            return True
        if vars(self.owner).get(self.name) is self.installed:
            setattr(self.owner, self.name, self.original)
            if _POINTS.get((self.owner, self.name)) is self:
                del _POINTS[(self.owner, self.name)]
            return True
        _logger.warning("otel_resilience: %s.%s was patched again after us; leaving it", self.owner, self.name)
        return False


_LOCK = threading.RLock()
_POINTS: dict[tuple[Any, str], _HookPoint] = {}


def _point(owner: Any, name: str) -> _HookPoint:
    """The hook point of ``owner.name``, made when first needed. One left behind under a foreign layer is used again
    while it is still in the attribute's chain; one that somebody removed from it (``unwrap`` takes the outermost
    layer, whoever owns it) is replaced by a new one around what the attribute holds now."""
    point = _POINTS.get((owner, name))
    if point is None or not point.is_reachable():
        point = _POINTS[(owner, name)] = _HookPoint(owner, name)
    return point


def subscribers(owner: Any, name: str) -> list[Wrapper]:
    """The wrappers the patch of ``owner.name`` holds now, innermost first (none: not patched by us)."""
    with _LOCK:
        point = _POINTS.get((owner, name))
        return [] if point is None else [s.wrapper for s in point.subscriptions]


class Patches:
    """The patches of one instrumentor (or one configured target), undone exactly by `restore()`."""

    def __init__(self) -> None:
        self._subscribed: list[tuple[_HookPoint, _Subscription]] = []
        self._replaced: list[tuple[Any, str, Any, Any]] = []
        self._deferred: list[Callable[[], None]] | None = []
        """What `activate` will patch; None once it ran (or after `restore`)."""

    def wrap(self, owner: Any, name: str, wrapper: Wrapper, *, enabled: Enabled = None, deferred: bool = False) -> None:
        """Subscribe `wrapper` to ``owner.name`` (a method, staticmethod or classmethod of a class, or a module's
        function): one patch serves every subscriber. `deferred`: by `activate`, not now."""
        subscription = _Subscription(wrapper, enabled)
        with _LOCK:
            if deferred and self._deferred is not None:
                self._deferred.append(lambda: self._subscribe(owner, name, subscription))
            else:
                self._subscribe(owner, name, subscription)

    def _subscribe(self, owner: Any, name: str, subscription: _Subscription) -> None:
        point = _point(owner, name)
        point.subscribe(subscription)
        self._subscribed.append((point, subscription))

    def replace(self, owner: Any, name: str, replacement: Any, *, deferred: bool = False) -> None:
        """Put `replacement` in place of ``owner.name``, for what `wrap` cannot wrap (a property whose getter is the
        hook point, a module attribute that is not a function); not shared: one adapter owns it."""
        with _LOCK:
            if deferred and self._deferred is not None:
                self._deferred.append(lambda: self._replace(owner, name, replacement))
            else:
                self._replace(owner, name, replacement)

    def _replace(self, owner: Any, name: str, replacement: Any) -> None:
        original = vars(owner)[name]
        setattr(owner, name, replacement)
        self._replaced.append((owner, name, original, replacement))

    def activate(self) -> None:
        """Apply the deferred patches, once. It runs on the app's thread when its first call finds an SDK: it never
        raises (an error is logged once), and a call that finds it running waits for it."""
        try:
            with _LOCK:
                pending, self._deferred = self._deferred, None
                for apply in pending or ():
                    apply()
        except Exception:
            report_internal_error("otel_resilience.patching: applying deferred patches")

    def restore(self) -> bool:
        """Undo every patch; False when some original could not go back because another layer sits on ours."""
        clean = True
        with _LOCK:
            self._deferred = None  # a call still in flight must not apply them now
            for owner, name, original, ours in reversed(self._replaced):
                if vars(owner).get(name) is ours:
                    setattr(owner, name, original)
                else:
                    clean = False
                    _logger.warning("otel_resilience: %s.%s was patched again after us; leaving it", owner, name)
            for point, subscription in reversed(self._subscribed):
                clean = point.unsubscribe(subscription) and clean
            self._replaced.clear()
            self._subscribed.clear()
        return clean
