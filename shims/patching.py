"""Apply wrappers all-or-nothing, reversibly.

A Patch names one attribute of one vLLM class or module and the raw object
(as `inspect.getattr_static` sees it, so staticmethods stay staticmethods)
that replaces it. `apply` installs a list of patches in order; if any step
fails, every patch already installed is restored before the error leaves.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

_MISSING = object()


class ShimError(RuntimeError):
    """A shim could not be applied; vLLM is left exactly as it was."""


@dataclass
class Patch:
    owner: Any  # class or module
    name: str
    make: Callable[[Callable], Callable]  # original function -> wrapper function
    shim: str  # which shim module asked for it
    original: Any = _MISSING  # raw attribute before applying
    installed: Any = _MISSING  # raw attribute we set
    own: bool = True  # the owner defined the attribute itself (not inherited)

    @property
    def label(self) -> str:
        return f"{getattr(self.owner, '__name__', self.owner)}.{self.name}"

    def apply(self) -> None:
        raw = inspect.getattr_static(self.owner, self.name, _MISSING)
        if raw is _MISSING:
            raise ShimError(f"{self.shim}: {self.label} does not exist")
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if getattr(func, "__driftcheck_shim__", None):
            raise ShimError(f"{self.shim}: {self.label} is already wrapped by {func.__driftcheck_shim__}")
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
                raise ShimError(f"injected failure at patch {i} ({patch.label})")
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
