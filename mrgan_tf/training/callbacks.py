"""Keras callbacks for a multi-day run: checkpoints, TensorBoard, a NaN guard, a loss log, progress lines."""
from __future__ import annotations

import math
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf

from mrgan_tf.errors import UserError
from mrgan_tf.evaluation import figures
from mrgan_tf.preprocess.context import centre_slice
from tfrecords_tools import atomic


class NonFiniteLoss(UserError, RuntimeError):
    """Training diverged (a NaN or infinite loss); the last good checkpoint is kept."""


def _iteration(model) -> int:
    return int(model.iteration.numpy())


class Checkpointing(keras.callbacks.Callback):
    """Saves every ``every`` iterations and when training ends, but never after a NaN.

    tf.train.CheckpointManager writes each checkpoint before it updates the
    pointer file, so a kill at any moment leaves the previous one loadable.
    ``before_save`` callables run first (the history flush): what a checkpoint
    resumes from is always on disk when the checkpoint is. Run it after the
    callbacks that log the iteration. A failed write (disk full) is an
    ``atomic.OutputError`` naming the checkpoint.
    """

    def __init__(self, manager: tf.train.CheckpointManager, every: int, before_save=()):
        super().__init__()
        self.manager, self.every = manager, max(1, every)
        self.before_save = tuple(before_save)
        self.failed = False

    def on_train_batch_end(self, batch, logs=None):
        if self.failed:
            return
        it = _iteration(self.model)
        if it % self.every == 0:
            self._save(it)

    def on_train_end(self, logs=None):
        self.save_now()

    def save_now(self):
        """Save the current iteration unless it is saved already (the end of training, a preemption)."""
        it = _iteration(self.model)
        if not self.failed and self.manager.latest_checkpoint != self._path(it):
            self._save(it)

    def _save(self, it):
        for flush in self.before_save:
            flush()
        try:
            self.manager.save(checkpoint_number=it)
        except (OSError, tf.errors.OpError) as e:
            reason = atomic.describe_os_error(e) if isinstance(e, OSError) else getattr(e, "message", str(e))
            raise atomic.OutputError(self._path(it), f"cannot write the checkpoint: {reason.splitlines()[0]}") \
                from None

    def _path(self, it):
        return os.path.join(self.manager.directory, f"ckpt-{it}")


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss term and names it."""

    def __init__(self, checkpointing: Checkpointing | None = None):
        super().__init__()
        self.checkpointing = checkpointing
        self.error: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: float(np.mean(v)) for k, v in (logs or {}).items() if not np.all(np.isfinite(v))}
        if bad and self.error is None:
            self.error = (f"non-finite loss at iteration {_iteration(self.model)}: {bad}; training stopped, "
                          f"the last good checkpoint is kept")
            if self.checkpointing is not None:
                self.checkpointing.failed = True
            self.model.stop_training = True


class TrainingMonitor(keras.callbacks.Callback):
    """TensorBoard scalars (every loss term, learning rates, iterations/s), image panels, and history.csv.

    The image panel is CT | SynMR | reference MR | |error| | SynCT(SynMR(CT)) on
    fixed validation slices, so successive panels are comparable.
    """

    def __init__(self, run_dir: str, every: int = 50, image_every: int = 500, fixed: dict | None = None,
                 write: bool = True, extra_columns=()):
        super().__init__()
        self.every, self.image_every, self.fixed = max(1, every), max(1, image_every), fixed
        self.write = write
        # Columns filled by other callbacks (validation scores) through ``pending``; NaN in other rows.
        self.extra_columns, self.pending = tuple(extra_columns), {}
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs", "train")) if write else None
        self.history_path = os.path.join(run_dir, "history.csv")
        self._t0, self._it0 = None, None
        self._keys = None

    def on_train_begin(self, logs=None):
        self._t0, self._it0 = time.perf_counter(), _iteration(self.model)
        if self.write:
            self._drop_rows_after(self._it0)

    def _drop_rows_after(self, it):
        """A resumed run repeats the iterations after its checkpoint: drop their rows of the killed run."""
        if not os.path.exists(self.history_path):
            return
        with open(self.history_path) as f:
            lines = f.readlines()
        # (a row cut short by the kill has no newline: dropped too)
        kept = lines[:1] + [ln for ln in lines[1:] if ln.endswith("\n") and ln.split(",", 1)[0].isdigit()
                            and int(ln.split(",", 1)[0]) <= it]
        if len(kept) != len(lines):
            atomic.atomic_write_text(self.history_path, "".join(kept))

    def flush(self):
        """Put history.csv and the TensorBoard events on disk (called before every checkpoint)."""
        if not self.write:
            return
        self.writer.flush()
        if os.path.exists(self.history_path):
            try:
                with open(self.history_path, "rb") as f:
                    os.fsync(f.fileno())
            except OSError as e:
                raise atomic.OutputError(self.history_path, f"cannot write: {atomic.describe_os_error(e)}") from None

    def on_train_batch_end(self, batch, logs=None):
        it = _iteration(self.model)
        if not self.write or not logs:
            return
        if it % self.every == 0:
            now = time.perf_counter()
            rate = (it - self._it0) / max(now - self._t0, 1e-9)
            self._t0, self._it0 = now, it
            values = {k: float(np.mean(v)) for k, v in logs.items()}
            with self.writer.as_default(step=it):
                for k, v in values.items():
                    tf.summary.scalar(f"loss/{k}", v)
                for name, opt in self.model.optimizers.items():
                    tf.summary.scalar(f"learning_rate/{name}", float(opt.learning_rate))
                tf.summary.scalar("iterations_per_second", rate)
            self._append_history(it, values, rate)
        if self.fixed is not None and it % self.image_every == 0:
            self.write_images(it)

    def _append_history(self, it, values, rate):
        keys = sorted(values) + [k for k in self.extra_columns if k not in values]
        values = {**values, **self.pending}
        self.pending = {}
        new = not os.path.exists(self.history_path)
        if not new and self._keys is None:
            with open(self.history_path) as f:
                self._keys = f.readline().strip().split(",")[1:-1]
        if new:
            self._keys = keys
        row = [str(it)] + [f"{values.get(k, math.nan):.6g}" for k in self._keys] + [f"{rate:.4g}"]
        header = ",".join(["iteration", *keys, "iterations_per_second"]) + "\n" if new else ""
        try:
            with open(self.history_path, "a") as f:
                f.write(header + ",".join(row) + "\n")
        except OSError as e:
            raise atomic.OutputError(self.history_path, f"cannot write: {atomic.describe_os_error(e)}") from None

    def write_images(self, it):
        syn = self.model.syn_mr(self.fixed["ct"], training=False)
        rec = self.model.syn_ct(syn, training=False)                 # Fig. 7: CT -> SynMR -> SynCT
        centre = lambda x: np.asarray(centre_slice(x))[..., 0]  # noqa: E731  (a 2.5D stack's own slice)
        panels = [figures.slice_panel(c, s, r, b) for c, s, r, b in
                  zip(centre(self.fixed["ct"]), centre(syn), centre(self.fixed["mr"]), centre(rec))]
        with self.writer.as_default(step=it):
            tf.summary.image("CT | SynMR | MR | error | SynCT(SynMR)",
                             np.stack(panels)[..., None], max_outputs=len(panels))
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()


class Validation(keras.callbacks.Callback):
    """Scores the generators on the validation patients every ``every`` iterations (TensorBoard
    ``logs/validation``, history.csv through ``monitor``) and keeps the best checkpoint by ``key``
    (lower is better) in its own manager, next to the latest ones."""

    def __init__(self, val_set, every: int, key: str, best, run_dir: str, monitor: TrainingMonitor | None = None,
                 write: bool = True):
        super().__init__()
        self.val_set, self.every, self.key, self.best, self.monitor = val_set, max(1, every), key, best, monitor
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "logs", "validation")) if write else None
        self.last: dict[str, float] = {}

    def on_train_batch_end(self, batch, logs=None):
        it = _iteration(self.model)
        if it % self.every:
            return
        self.last = scores = self.val_set.scores(self.model)
        if self.writer is not None:
            with self.writer.as_default(step=it):
                for k, v in scores.items():
                    tf.summary.scalar(f"validation/{k}", v)
            self.writer.flush()
        if self.monitor is not None:
            self.monitor.pending.update({f"val_{k}": v for k, v in scores.items()})
        if self.key not in scores:
            raise KeyError(f"validation score {self.key!r} not computed (have {sorted(scores)})")
        self.best.offer(it, scores[self.key], scores)


# Each network's loss in a phase ("paired/syn_mr"), not its terms ("paired/syn_mr_l1").
_NETWORK_LOSS = re.compile(r"^(\w+)/((syn|dis)_[a-z]+)$")


def duration(seconds: float) -> str:
    """42s, 3m05s, 5h02m, 2d03h: short enough for a progress line."""
    s = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // sub_size:02d}{sub}"
    return f"{s}s"


def network_losses(logs) -> str:
    """``paired: syn_mr 56.7 syn_ct 79.5 dis_mr 1.46 ...``: each network's loss by phase, generators first."""
    phases: dict[str, list[str]] = {}
    for key in sorted(logs or {}, key=lambda k: (k.split("/")[0], "/syn_" not in k, k)):
        m = _NETWORK_LOSS.match(key)
        if m:
            phases.setdefault(m.group(1), []).append(f"{m.group(2)} {float(np.mean(logs[key])):.3g}")
    return "  ".join(f"{phase}: {' '.join(values)}" for phase, values in phases.items())


class ProgressLines(keras.callbacks.Callback):
    """A plain line every ``every`` iterations and at least every ``seconds`` (0: no time limit):
    iteration/total, iterations/s, time left and each network's loss, for a terminal and a log
    file alike (``print``, flushed).

    The first iteration gets a line of its own (it traces the step: tens of seconds); the rate
    and the time left count from its end. The iteration comes from the batch index, and the
    losses are the ones Keras has already fetched for the callbacks: no extra read of the model.
    """

    def __init__(self, total: int, every: int, seconds: float = 30.0, write=None):
        super().__init__()
        self.total, self.every, self.seconds = total, max(1, every), seconds
        self.write = write or (lambda line: print(line, flush=True))
        self._start = self._first = self._first_t = self._last_t = None

    def on_train_begin(self, logs=None):
        self._start, self._last_t = _iteration(self.model), time.perf_counter()
        self._first = None

    def on_train_batch_end(self, batch, logs=None):
        it, now = self._start + batch + 1, time.perf_counter()
        if self._first is None:
            self._first, self._first_t = it, now
            speed = f"first iteration in {duration(now - self._last_t)} (tracing the step)"
        elif it % self.every == 0 or it == self.total or (self.seconds and now - self._last_t >= self.seconds):
            rate = (it - self._first) / max(now - self._first_t, 1e-9)
            speed = f"{rate:.3g} it/s, {duration((self.total - it) / rate)} left"
        else:
            return
        self._last_t = now
        self.write(f"iteration {it}/{self.total} ({100 * it // self.total}%)  {speed}  {network_losses(logs)}".rstrip())
