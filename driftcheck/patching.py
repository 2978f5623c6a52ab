"""One wrapper protocol for every descriptor kind: apply wrappers all-or-nothing, reversibly.

A Patch names one attribute of a class or module and a `make(original) -> wrapper`
function. The attribute is read with `inspect.getattr_static`, so a staticmethod
or classmethod is unwrapped, its function wrapped, and the wrapper re-wrapped in
the same descriptor kind; an inherited attribute is restored by deleting ours.
`apply_all` installs a list of patches in order; if any step fails, every patch
already installed is restored before the error leaves.

Used by the shims (runtime), the live reader's engine observers and the probes'
fault switches: nothing here knows about vLLM.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

_MISSING = object()


class PatchError(RuntimeError):
    """A patch could not be applied; the patched objects are left exactly as they were."""


@dataclass
class Patch:
    owner: Any  # class or module
    name: str
    make: Callable[[Callable], Callable]  # original function -> wrapper function
    shim: str  # who asked for it (a shim module, an observer, a fault)
    surface: str | None = None  # the catalogued surface this attribute is, if any (checked before binding)
    original: Any = _MISSING  # raw attribute before applying
    installed: Any = _MISSING  # raw attribute we set
    own: bool = True  # the owner defined the attribute itself (not inherited)

    @property
    def label(self) -> str:
        return f"{getattr(self.owner, '__name__', self.owner)}.{self.name}"

    def apply(self) -> None:
        raw = inspect.getattr_static(self.owner, self.name, _MISSING)
        if raw is _MISSING:
            raise PatchError(f"{self.shim}: {self.label} does not exist")
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if getattr(func, "__driftcheck_shim__", None):
            raise PatchError(f"{self.shim}: {self.label} is already wrapped by {func.__driftcheck_shim__}")
        # An inherited attribute is restored by deleting ours, not by copying the base's down.
        self.own = isinstance(self.owner, type) is False or self.name in vars(self.owner)
        if isinstance(raw, (staticmethod, classmethod)):
            wrapper = self.make(raw.__func__)
            functools.update_wrapper(wrapper, raw.__func__)
            new = type(raw)(wrapper)
        else:
            new = self.make(raw)
            functools.update_wrapper(new, raw)
        new_func = new.__func__ if isinstance(new, (staticmethod, classmethod)) else new
        new_func.__driftcheck_shim__ = self.shim
        self.original, self.installed = raw, new
        setattr(self.owner, self.name, new)

    def restore(self) -> None:
        if self.original is _MISSING:
            return
        if self.own:
            setattr(self.owner, self.name, self.original)
        else:
            delattr(self.owner, self.name)
        self.original = self.installed = _MISSING


def apply_all(patches: list[Patch], fail_at: int | None = None) -> list[Patch]:
    """Install every patch or none. `fail_at` (1-based) injects a failure, for tests."""
    done: list[Patch] = []
    try:
        for i, patch in enumerate(patches, start=1):
            if fail_at == i:
                raise PatchError(f"injected failure at patch {i} ({patch.label})")
            patch.apply()
            done.append(patch)
    except BaseException:
        for patch in reversed(done):
            patch.restore()
        raise
    return done


def restore_all(patches: list[Patch]) -> None:
    for patch in reversed(patches):
        patch.restore()
