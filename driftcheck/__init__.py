"""driftcheck: tells ESamp users what in their installed vLLM moved, before a GPU-day is lost."""

from pathlib import Path as _Path

__version__ = "0.1.0"


def _join_checkout_rooms() -> None:
    """Installed, adapters/ shims/ probes/ live inside this package (driftcheck.adapters, ...).
    In a source checkout they sit beside it; when this module is imported from a checkout
    (e.g. `python -m driftcheck` in the repository root), let the subpackages resolve there."""
    here = _Path(__file__).resolve().parent
    root = here.parent
    if (here / "shims").is_dir() or not (root / "shims" / "__init__.py").is_file():
        return
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "driftcheck"' in pyproject.read_text(encoding="utf-8"):
        __path__.append(str(root))  # noqa: F821 - the package's own __path__


_join_checkout_rooms()
