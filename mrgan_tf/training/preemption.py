"""Stop on SIGTERM or SIGINT with the current iteration saved: how machines actually stop a job.

A preempted cloud VM and a batch scheduler's time limit send SIGTERM, then kill after a
grace period; a person presses Ctrl-C. ``StopOnSignal`` answers from the start of a run
to its end:

- while the run starts (records, model, restoring a checkpoint) there is nothing new to
  save: the run ends at once (``Preempted``);
- during training, the first signal asks ``fit`` to stop after the iteration running now:
  ``Checkpointing.on_train_end`` then flushes the history and writes that iteration's
  checkpoint (atomically, as every checkpoint);
- after training (the export at the end), the last iteration is saved already: the export,
  written atomically, is abandoned (``Preempted``) and the rerun writes it, so the stop
  never waits for a SavedModel of the full model.

The run then ends with ``EXIT_PREEMPTED``; rerunning the same command resumes. The time to
stop is the rest of the running iteration plus one checkpoint write (docs/BENCHMARKS.md).
A second signal ends the process at once by the signal's default action: a checkpoint
being written never becomes the latest, so the previous one stays the one a rerun resumes
from, and every other output is written atomically.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

import keras
import tensorflow as tf

from mrgan_tf.training.signals import EXIT_PREEMPTED, SIGNALS  # noqa: F401  (EXIT_PREEMPTED: the status)


class Preempted(BaseException):
    """A signal outside training (a BaseException, so no handler swallows it): ``during`` "starting",
    nothing to save yet; "finishing", the last iteration is saved and the export is left to the rerun."""

    def __init__(self, name: str, during: str = "starting"):
        super().__init__(name)
        self.signal_name, self.during = name, during


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
        if self.phase != "training":   # the export is written atomically: abandoned, it is simply not there
            raise Preempted(self.signal_name, self.phase)
        print(f"train: {self.signal_name} received: stopping after this iteration and saving it (send it again "
              "to stop at once, keeping the previous checkpoint)", flush=True)
        if self.model is not None:
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


class WorkersStopTogether(keras.callbacks.Callback):
    """SIGTERM under MultiWorkerMirroredStrategy: every worker saves the same iteration, then stops.

    Workers train in lockstep, so one cannot stop alone. TensorFlow's
    ``PreemptionCheckpointHandler`` does the agreeing: the worker that gets the signal
    names the next iteration through the cluster's coordination service, and after it
    every worker calls ``save`` (the run's own checkpointing: the chief's checkpoint
    lands in checkpoints/, as every other) and stops. On a GCP GPU VM it also watches the
    metadata server's maintenance notice (its own default; on GCP CPU VMs it does nothing).
    Call ``close()`` when the run ends: it stops the handler's watcher threads.
    """

    def __init__(self, strategy: tf.distribute.Strategy, save: Callable[[], None], scratch: str):
        super().__init__()
        self.signal_name: str | None = None
        config = tf.distribute.experimental.TerminationConfig(exit_fn=self._stop, save_fn=save)
        # The handler's own step counter lives in a checkpoint of its own, in scratch (never resumed from:
        # every worker restarts from the chief's checkpoint, and so counts from the same number).
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, tf.train.Checkpoint(), checkpoint_dir=os.path.join(scratch, "preemption"),
            termination_config=config)

    def on_train_batch_end(self, batch, logs=None):
        if self.handler is not None:
            self.handler.save_checkpoint_if_preempted()

    def _stop(self):
        self.signal_name = "SIGTERM"
        print("train: SIGTERM on a worker: every worker saved this iteration and stops", flush=True)
        self.model.stop_training = True

    def close(self) -> None:
        self.handler = None   # its __del__ stops the watcher threads
