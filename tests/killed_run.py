"""Run as a script: `python -m mrgan_tf.train` flags, but SIGKILLs itself mid-training.

The kill lands on iteration --kill_at (after the checkpoint before it), the way
a pre-empted job dies: no clean-up, no exit handlers. --kill_after_checkpoint=N
dies the instant checkpoint N is on disk (before any later callback);
--kill_in_export dies when the end-of-training export starts its second
SavedModel (the first direction written, the other not).
"""
import os
import signal
import sys

import keras
import tensorflow as tf
from absl import app, flags

from mrgan_tf.training import train

train.define_flags()
flags.DEFINE_integer("kill_at", 1, "Iteration at which the process kills itself (0: never).")
flags.DEFINE_integer("kill_after_checkpoint", 0, "Kill right after writing checkpoint N (0: never).")
flags.DEFINE_bool("kill_in_export", False, "Kill at the start of the export's second SavedModel.")
flags.DEFINE_integer("term_at", 0, "Iteration at which the process sends itself SIGTERM (0: never).")
flags.DEFINE_bool("term_in_save", False, "Send a second SIGTERM when the checkpoint after --term_at starts.")
flags.DEFINE_bool("term_in_export", False, "Send SIGTERM when the end-of-training export starts its first SavedModel.")


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        it = int(self.model.iteration.numpy())
        if flags.FLAGS.kill_at and it >= flags.FLAGS.kill_at:
            die()
        if flags.FLAGS.term_at and it == flags.FLAGS.term_at:   # as a scheduler's time limit sends it
            os.kill(os.getpid(), signal.SIGTERM)


def arm():
    fv = flags.FLAGS
    if fv.kill_after_checkpoint:
        save = tf.train.CheckpointManager.save

        def save_then_die(self, *args, **kwargs):
            path = save(self, *args, **kwargs)
            if path.endswith(f"ckpt-{fv.kill_after_checkpoint}") and self.directory.endswith("checkpoints"):
                die()
            return path
        tf.train.CheckpointManager.save = save_then_die
    if fv.term_in_save:   # the second signal lands while the stop's checkpoint is being written
        save = tf.train.CheckpointManager.save

        def term_then_save(self, *args, **kwargs):
            if kwargs.get("checkpoint_number") == fv.term_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return save(self, *args, **kwargs)
        tf.train.CheckpointManager.save = term_then_save
    if fv.term_in_export:   # a preemption while the finished run writes its SavedModels
        saved_model_save = tf.saved_model.save

        def term_then_save(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return saved_model_save(*args, **kwargs)
        tf.saved_model.save = term_then_save
    if fv.kill_in_export:
        saved_model_save, calls = tf.saved_model.save, []

        def second_save_dies(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                die()
            return saved_model_save(*args, **kwargs)
        tf.saved_model.save = second_save_dies


def main(argv):
    arm()
    from mrgan_tf.training.preemption import EXIT_PREEMPTED, Preempted
    try:
        summary = train.train(flags.FLAGS.records, flags.FLAGS.out, *train.configs_from_flags(flags.FLAGS),
                              callbacks=[Kill()])
    except Preempted as e:
        print(f"stopped by {e.signal_name} while {e.during}", file=sys.stderr)
        return EXIT_PREEMPTED
    if summary.get("stopped_by"):
        print(f"stopped by {summary['stopped_by']} at iteration {summary['iterations']}", file=sys.stderr)
        return EXIT_PREEMPTED
    print("not killed", file=sys.stderr)
    return 3


if __name__ == "__main__":
    app.run(main)
