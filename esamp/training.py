"""Training bookkeeping: the distillers' steps run on the device (a side stream on CUDA) and
their losses are read only once the device has finished them, so no sampling step waits."""

from __future__ import annotations

from collections import deque

from esamp.counters import ESampCounters, span


class LossBook:
    def __init__(self, counters: ESampCounters) -> None:
        self.counters = counters
        self.unread = deque()  # (loss tensor, rows, ready event | None), oldest first

    def train(self, distiller, shallow, deep):
        """The prediction for this step's intervention (before this step's update), then the update."""
        with span("esamp.predict"):
            pred = distiller.predict(shallow)
        with span("esamp.train"):
            loss, ready = distiller.train_async(shallow, deep)
        self.unread.append((loss, shallow.shape[0], ready))
        return pred

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
