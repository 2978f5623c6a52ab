"""Training bookkeeping: the distillers' steps run on the device (queued in stream order, or on a side stream) and
their losses are read only once the device has finished them, so no sampling step waits.

Each distiller sums its steps' losses where it runs (OnlineDistiller.losses); every LOSS_EVERY queued steps,
one copy per distiller with steps since its last copy brings the sums to the host (on CUDA no per-step copy,
event or pinned allocation: host time in a host-bound engine's every step), and `read` folds the copies the
device has finished into the counters: the steps, their rows, the sum of their losses, the last loss, and a
history point (esamp/counters.py LOSS_EVERY) for the step that triggered the copy."""

from __future__ import annotations

import weakref
from collections import deque

from driftcheck.shims.hook_points import timed
from esamp.counters import LOSS_EVERY, ESampCounters


class LossBook:
    def __init__(self, counters: ESampCounters) -> None:
        self.counters = counters
        # (distiller, host copy of (loss sum, last loss), its ready event (None: the CPU, written), steps,
        # rows, history point), oldest first
        self.unread = deque()
        self.queued = 0  # distiller steps queued, read or not
        self.pending: dict = {}  # distiller -> [steps, rows] queued since its last copy
        self.read_sums = weakref.WeakKeyDictionary()  # distiller -> the loss sum counted so far
        self.deferred: list = []  # distillers whose last step left its update for `settle`
        self.copy_due = False  # a history copy waits for those updates

    def train(self, distiller, shallow, deep, post=None):
        """Queue one distiller step on these rows: its prediction (made before this step's update,
        with post(prediction)) and the update. Returns the esamp.distiller.Step."""
        with timed("esamp.distill", self.counters.host_s):
            self._settle_before(distiller)
            step = distiller.step(shallow, deep, post)
        return self._queued(distiller, step, shallow.shape[0])

    def train_gathered(self, distiller, sources, n: int, post=None):
        """`train` on the rows src[index[:n]] of the two taps' buffers, sources = ((shallow buffer, index),
        (deep buffer, index)) (OnlineDistiller.step_gathered)."""
        (src_shallow, index_shallow), (src_deep, index_deep) = sources
        with timed("esamp.distill", self.counters.host_s):
            self._settle_before(distiller)
            step = distiller.step_gathered(src_shallow, src_deep, index_shallow, index_deep, n, post)
        return self._queued(distiller, step, n)

    def _settle_before(self, distiller) -> None:
        """Before a distiller's step: its last update still deferred means the draw's hook did not come since;
        queue it (and any other deferred one) now, counted late."""
        if distiller in self.deferred:
            self.settle(after_draw=False)

    def _queued(self, distiller, step, rows: int):
        self.queued += 1
        self.counters.graph_steps += step.graphed
        if distiller.graph_error is not None and self.counters.graph_error is None:
            self.counters.graph_error = distiller.graph_error
        if distiller.norm_path is not None:
            self.counters.distiller_norm = distiller.norm_path
        history = self.queued % LOSS_EVERY == 1
        counts = self.pending.pop(distiller, [0, 0])
        self.pending[distiller] = [counts[0] + 1, counts[1] + rows]  # re-inserted: the last stepped is last
        if distiller.update_pending:
            self.deferred.append(distiller)
        if history and self.deferred:
            self.copy_due = True  # the loss is written by the update: copied once it is queued (`settle`)
        elif history:
            self._copy(history=True)
        return step

    def settle(self, after_draw: bool = True) -> None:
        """Queue the updates the last steps deferred (OnlineDistiller.flush), then a loss copy that waited for
        them. after_draw: called once the sampler queued its draw (the `sampled` hook point); else late (the next
        step, or a read, needs them)."""
        for distiller in self.deferred:
            if distiller.flush(after_caller=after_draw):
                if after_draw:
                    self.counters.updates_after_draw += 1
                else:
                    self.counters.updates_late += 1
        self.deferred.clear()
        if self.copy_due:
            self.copy_due = False
            self._copy(history=True)

    def _copy(self, history: bool = False) -> None:
        """Queue the loss sums of every distiller with steps since its last copy, the one that stepped last
        last (its copy holds the latest loss; with `history`, the loss of the step that makes the point)."""
        last = next(reversed(self.pending), None)
        for distiller, (steps, rows) in self.pending.items():
            host, ready = distiller.losses_to_host()
            self.unread.append((distiller, host, ready, steps, rows, history and distiller is last))
        self.pending.clear()

    def read(self, block: bool) -> None:
        """Fold finished copies into the counters, oldest first; with block=False, stop at the first one the
        device has not finished; with block=True, copy every step not yet copied first and wait for all."""
        if block and self.deferred:
            self.settle(after_draw=False)
        if block and self.pending:
            self._copy()
        while self.unread:
            distiller, host, ready, steps, rows, history = self.unread[0]
            if ready is not None and not ready.query():
                if not block:
                    break
                ready.synchronize()
            self.unread.popleft()
            total, last = float(host[0]), float(host[1])
            self.counters.record_losses(steps, rows, total - self.read_sums.get(distiller, 0.0), last, history)
            self.read_sums[distiller] = total
