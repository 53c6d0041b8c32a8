"""Stop on SIGTERM or SIGINT with the current iteration saved: how machines actually stop a job.

A preempted cloud VM and a batch scheduler's time limit send SIGTERM, then kill after a
grace period; a person presses Ctrl-C. ``StopOnSignal`` answers from the start of a run
to its end:

- while the run starts (records, model, restoring a checkpoint) there is nothing new to
  save: the run ends at once (``Preempted``);
- during training, the first signal asks ``fit`` to stop after the iteration running now:
  ``Checkpointing.on_train_end`` then flushes the history and writes that iteration's
  checkpoint (atomically, as every checkpoint);
- after training (the export at the end) the run finishes what it writes.

The run then ends with ``EXIT_PREEMPTED``; rerunning the same command resumes. The time to
stop is the rest of the running iteration plus one checkpoint write (docs/BENCHMARKS.md).
A second signal ends the process at once by the signal's default action: a checkpoint
being written never becomes the latest, so the previous one stays the one a rerun resumes
from, and every other output is written atomically.
"""
from __future__ import annotations

import os
import signal

import keras

EXIT_PREEMPTED = 75     # EX_TEMPFAIL: stopped by a signal, resumable; schedulers may requeue on it
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
    """A signal before training began: nothing to save (a BaseException, so no handler swallows it)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal_name = name


class StopOnSignal(keras.callbacks.Callback):
    """SIGTERM/SIGINT handling for one run: ``arm()`` at its start, ``restore()`` at its end."""

    def __init__(self):
        super().__init__()
        self.signal_name: str | None = None   # the signal that stopped the run, once one has
        self.phase = "starting"               # starting | training | finishing
        self._previous: dict = {}

    def arm(self) -> "StopOnSignal":
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:   # the second: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal_name = signal.Signals(signum).name
        if self.phase == "starting":
            raise Preempted(self.signal_name)
        what = ("stopping after this iteration and saving it" if self.phase == "training"
                else "finishing what the run writes")
        print(f"train: {self.signal_name} received: {what} (send it again to stop at once, keeping the "
              "previous checkpoint)", flush=True)
        if self.phase == "training" and self.model is not None:
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self.phase = "training"
        if self.signal_name is not None:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.signal_name is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.phase = "finishing"

    def restore(self) -> None:
        """Put back the handlers that were there before the run."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
