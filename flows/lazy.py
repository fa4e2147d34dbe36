"""Prefect's `flow` and `task` decorators, applied on first use instead of at import.

Importing prefect costs seconds (it loads its server, client and settings). The CLI imports every
flows module to list its commands, so `spinetrack --help` and a mistyped option would pay that
cost for nothing. `lazy.flow(...)`/`lazy.task(...)` take the same arguments as prefect's and build
the real Flow/Task the first time it is called or an attribute (`.fn`, `.serve`, `.deploy`,
`.with_options`, `.name`) is read. `isinstance(obj, prefect.Flow)` holds once prefect is loaded, so
entrypoint loaders (deployments, workers) accept these objects.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")

#: Re-entrant: building one object may touch another lazy object (or this one's `__class__`).
_LOCK = threading.RLock()


class LazyPrefectObject(Generic[P, R]):
    """Stands in for a prefect Flow or Task until first use, then forwards everything to it."""

    def __init__(self, kind: str, fn: Callable[P, R], options: dict[str, Any]) -> None:
        self._kind = kind
        self._fn = fn
        self._options = options
        self._real: Any = None
        self._building = False
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def real(self) -> Any:
        """The prefect Flow/Task (built, and prefect imported, on the first access)."""
        if self._real is None:
            with _LOCK:
                if self._real is None:
                    import prefect

                    decorator = getattr(prefect, self._kind)
                    options = _resolve(self._options)
                    _import_annotation_names(self._fn, options.pop("annotations_from", ()))
                    self._building = True  # prefect may inspect this object while wrapping its function
                    try:
                        self._real = decorator(**options)(self._fn) if options else decorator(self._fn)
                    finally:
                        self._building = False
                    for hook in _ON_LOAD:
                        hook()
        return self._real

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(obj, prefect.Flow) must see the real class
        if self._real is None and (self._building or not _prefect_loaded()):
            return LazyPrefectObject
        return type(self.real)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.real(*args, **kwargs)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in {"_real", "_kind", "_fn", "_options", "_building"}:
            raise AttributeError(name)
        return getattr(self.real, name)

    def __repr__(self) -> str:
        state = "built" if self._real is not None else "not built yet"
        return f"<lazy prefect {self._kind} {getattr(self._fn, '__name__', '?')} ({state})>"


#: Called once prefect is imported (e.g. the CLI quietens Prefect's console logging).
_ON_LOAD: list[Callable[[], None]] = []


def on_prefect_loaded(hook: Callable[[], None]) -> None:
    """Run `hook` right after a lazy flow or task first imports prefect."""
    _ON_LOAD.append(hook)


def _resolve(options: dict[str, Any]) -> dict[str, Any]:
    """Option values that need prefect: `cache_policy="NO_CACHE"` names a prefect.cache_policies member."""
    out = dict(options)
    if isinstance(out.get("cache_policy"), str):
        from prefect import cache_policies

        out["cache_policy"] = getattr(cache_policies, out["cache_policy"])
    return out


def _import_annotation_names(fn: Callable[..., Any], modules: tuple[str, ...]) -> None:
    """Prefect reads the parameter annotations (for validation and the UI's schema); types that the
    module imports only inside functions (to stay light) are looked up in `modules` and put in the
    function's globals first. `annotations_from=("pipeline.active_learning.loop",)` on the decorator."""
    import builtins
    import importlib
    import re

    names = set()
    for note in getattr(fn, "__annotations__", {}).values():
        names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", note if isinstance(note, str) else ""))
    missing = {n for n in names if n not in fn.__globals__ and not hasattr(builtins, n)}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in sorted(missing):
            if hasattr(module, name):
                fn.__globals__.setdefault(name, getattr(module, name))


def _prefect_loaded() -> bool:
    import sys

    return "prefect" in sys.modules


@overload
def flow(fn: Callable[P, R], /) -> LazyPrefectObject[P, R]: ...
@overload
def flow(**options: Any) -> Callable[[Callable[P, R]], LazyPrefectObject[P, R]]: ...
def flow(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """`prefect.flow`, built on first use."""
    if fn is not None:
        return LazyPrefectObject("flow", fn, {})
    return lambda f: LazyPrefectObject("flow", f, options)


@overload
def task(fn: Callable[P, R], /) -> LazyPrefectObject[P, R]: ...
@overload
def task(**options: Any) -> Callable[[Callable[P, R]], LazyPrefectObject[P, R]]: ...
def task(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """`prefect.task`, built on first use."""
    if fn is not None:
        return LazyPrefectObject("task", fn, {})
    return lambda f: LazyPrefectObject("task", f, options)
