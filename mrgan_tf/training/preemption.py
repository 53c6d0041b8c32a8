"""Stop on SIGTERM or SIGINT with the current iteration saved: how machines actually stop a job.

A preempted cloud VM and a batch scheduler's time limit send SIGTERM, then kill after a
grace period; a person presses Ctrl-C. The first signal asks training to stop after
the iteration running now: ``Checkpointing.on_train_end`` then flushes the history and
writes that iteration's checkpoint (atomically, as every checkpoint), and the run ends
with ``EXIT_PREEMPTED``; rerunning the same command resumes there. The time to stop is
the rest of the running iteration plus one checkpoint write (docs/BENCHMARKS.md). A
second signal, during that save, ends the process at once by the signal's default
action: the checkpoint being written never becomes the latest, so the previous one
stays the one a rerun resumes from.
"""
from __future__ import annotations

import os
import signal

import keras

EXIT_PREEMPTED = 75     # EX_TEMPFAIL: stopped by a signal, resumable; schedulers may requeue on it
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(keras.callbacks.Callback):
    """The first SIGTERM/SIGINT stops ``fit`` after the running iteration; the second ends the process."""

    def __init__(self):
        super().__init__()
        self.signal_name: str | None = None   # the signal that stopped training, once one has
        self._previous: dict = {}

    def on_train_begin(self, logs=None):
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _handle(self, signum, frame):
        if self.signal_name is not None:   # the second: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal_name = signal.Signals(signum).name
        print(f"train: {self.signal_name} received: stopping after this iteration and saving it "
              f"(send it again to stop at once, keeping the previous checkpoint)", flush=True)
        if self.model is not None:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.signal_name is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before training (the save at the end keeps ours)."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
