"""Training bookkeeping: the distillers' steps run on the device (queued in stream order, or on a side stream) and
their losses are read only once the device has finished them, so no sampling step waits."""

from __future__ import annotations

from collections import deque

from driftcheck.shims.hook_points import timed
from esamp.counters import ESampCounters


class LossBook:
    def __init__(self, counters: ESampCounters) -> None:
        self.counters = counters
        self.unread = deque()  # (loss tensor, rows, ready event | None), oldest first

    def train(self, distiller, shallow, deep, post=None):
        """Queue one distiller step on these rows: its prediction (made before this step's update,
        with post(prediction)) and the update. Returns the esamp.distiller.Step."""
        with timed("esamp.distill", self.counters.host_s):
            step = distiller.step(shallow, deep, post)
        return self._queued(distiller, step, shallow.shape[0])

    def train_gathered(self, distiller, sources, n: int, post=None):
        """`train` on the rows src[index[:n]] of the two taps' buffers, sources = ((shallow buffer, index),
        (deep buffer, index)) (OnlineDistiller.step_gathered)."""
        (src_shallow, index_shallow), (src_deep, index_deep) = sources
        with timed("esamp.distill", self.counters.host_s):
            step = distiller.step_gathered(src_shallow, src_deep, index_shallow, index_deep, n, post)
        return self._queued(distiller, step, n)

    def _queued(self, distiller, step, rows: int):
        self.unread.append((step.loss, rows, step.trained))
        self.counters.graph_steps += step.graphed
        if distiller.graph_error is not None and self.counters.graph_error is None:
            self.counters.graph_error = distiller.graph_error
        return step

    def read(self, block: bool) -> None:
        """Fold finished training steps' losses into the counters, oldest first; with
        block=False, stop at the first step the device has not finished."""
        while self.unread:
            loss, rows, ready = self.unread[0]
            if ready is not None and not block and not ready.query():
                break
            if ready is not None:
                ready.synchronize()
            self.unread.popleft()
            self.counters.record_loss(float(loss), rows)

