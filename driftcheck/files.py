"""Reading and writing files safely: every report, stats file and generated module is written
through `write_atomic` / `write_files`; every file a scan reads goes through `read_regular`.

Writing:
  - whole or not at all: the text is staged in a temp file beside the target and renamed over it;
  - never through what is not a regular file: a target that exists as a symlink, a device, a FIFO,
    a socket or a directory is refused (BadInput), never replaced;
  - an existing file keeps its mode (and its owner, where this process may set it); a new one
    gets what `open()` would give it: 0o666 less the umask;
  - the temp name is short (`.dc-XXXXXXXX.tmp`), so a legal target name always has a legal temp name;
  - SIGTERM or SIGHUP while staging removes the temp files, then the signal takes its course
    (SIGINT arrives as KeyboardInterrupt and is cleaned up the same way);
  - any OS error is BadInput("cannot write PATH: reason"), one line.

Reading: `read_regular` opens regular files only (a FIFO or a device is never opened), and never
reads more than a limit.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
import threading
from contextlib import contextmanager
from pathlib import Path

from driftcheck.errors import BadInput

#: signals whose default action would kill the process with the temp files still there
_CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------- reading

def read_regular(path: str | os.PathLike, limit: int) -> bytes | None:
    """The bytes of a regular file (symlinks to one are followed), None if it does not exist.

    BadInput if it is anything else (never opened then, so a FIFO cannot block and a device
    cannot be touched), larger than `limit` bytes, or unreadable.
    """
    path = Path(path)
    try:
        before = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {_reason(exc)}") from None
    if not stat.S_ISREG(before.st_mode):
        raise BadInput(f"cannot read {path}: not a regular file ({_kind(before.st_mode)})")
    if before.st_size > limit:
        raise BadInput(f"cannot read {path}: {before.st_size} bytes, over the {limit}-byte limit")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise BadInput(f"cannot read {path}: it changed while being opened")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {_reason(exc)}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise BadInput(f"cannot read {path}: over the {limit}-byte limit")
    return b"".join(chunks)


# --------------------------------------------------------------------------- writing

class _Interrupted(BaseException):
    """A cleanup signal arrived while files were staged."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_interrupt():
    """Turn SIGTERM/SIGHUP into an exception for the duration (main thread only; a signal whose
    disposition is 'ignore' stays ignored). The previous handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Interrupted(signum)

    previous = {}
    try:
        for sig in _CLEANUP_SIGNALS:
            current = signal.getsignal(sig)
            # SIG_IGN stays ignored; None is a handler not set from Python, which could not be put back
            if current is signal.SIG_DFL or callable(current):
                previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_target(path: str | os.PathLike) -> os.stat_result | None:
    """The lstat of what is at `path` if it is a regular file, None if nothing is there;
    BadInput if something else is there (it will not be replaced)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"refusing to replace {path}: it is {_kind(st.st_mode)}, not a regular file")
    return st


def check_writable(path: str | os.PathLike) -> None:
    """What a later write of `path` would refuse, refused now (before a long run): a target that
    is not a regular file, a parent that is not a directory, a name that is no file name."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise BadInput(f"cannot write {str(path)!r}: not a file name")
    check_target(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadInput(f"cannot write {path}: {parent} is not a directory")
            break


def _make_parent(path: Path) -> None:
    parent = path.parent
    try:
        if parent.exists() and not parent.is_dir():
            raise BadInput(f"cannot write {path}: {parent} is not a directory")
        parent.mkdir(parents=True, exist_ok=True)
    except BadInput:
        raise
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {_reason(exc)}") from None


def _stage(path: Path, data: bytes, existing: os.stat_result | None, temps: list[Path]) -> Path:
    for _ in range(100):
        tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
        temps.append(tmp)  # before it exists: a signal from here on removes it
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            temps.pop()
            continue
    else:
        raise BadInput(f"cannot write {path}: no free temp name in {path.parent}")
    try:
        if existing is not None:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, existing.st_uid, existing.st_gid)
                except PermissionError:
                    pass  # not ours to give away: the new file is ours, as any rewrite would be
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return tmp


def write_files(files: dict[str | os.PathLike, str | bytes]) -> list[Path]:
    """Write several files whole or not at all: all are staged first, then renamed into place.

    BadInput (nothing replaced) if a target is not a regular file or cannot be written.
    """
    items = [(Path(p), data if isinstance(data, bytes) else data.encode("utf-8")) for p, data in files.items()]
    for path, _ in items:
        check_writable(path)
    temps: list[Path] = []
    current = items[0][0] if items else None
    try:
        with _signals_interrupt():
            staged = []
            for current, data in items:
                _make_parent(current)
                existing = check_target(current)
                staged.append((_stage(current, data, existing, temps), current))
            for tmp, current in staged:
                check_target(current)  # still a regular file (or nothing) just before the rename
                os.replace(tmp, current)
    except _Interrupted as exc:
        _remove(temps)
        signal.raise_signal(exc.signum)  # the previous disposition acts now (the default one ends us)
        raise BadInput(f"writing {current} was interrupted by signal {exc.signum}") from None
    except OSError as exc:
        _remove(temps)
        raise BadInput(f"cannot write {current}: {_reason(exc)}") from None
    except BaseException:
        _remove(temps)
        raise
    return [path for path, _ in items]


TEMP_PREFIX = ".dc-"  # staged files: .dc-<writer pid>-<random>.tmp beside their target


def sweep_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove staged files whose writer is gone (a process killed with SIGKILL mid-write cannot
    remove its own); a live writer's are left alone. Returns what was removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(TEMP_PREFIX) and name.endswith(".tmp")):
            continue
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(Path(directory) / name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: str | os.PathLike, text: str | bytes) -> None:
    """Write whole or not at all; never through a path that is not a regular file."""
    write_files({path: text})


def _remove(temps: list[Path]) -> None:
    for tmp in temps:
        try:
            os.unlink(tmp)
        except OSError:
            pass
