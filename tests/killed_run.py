"""Run as a script: `python -m mrgan_tf.train` flags, but SIGKILLs itself mid-training.

The kill lands on iteration --kill_at (after the checkpoint before it), the way
a pre-empted job dies: no clean-up, no exit handlers.
"""
import os
import signal
import sys

import keras
from absl import app, flags

from mrgan_tf import train

flags.DEFINE_integer("kill_at", 1, "Iteration at which the process kills itself.")


class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.iteration.numpy()) >= flags.FLAGS.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    train.train(flags.FLAGS.records, flags.FLAGS.out, extra_callbacks=[Kill()])
    print("not killed", file=sys.stderr)
    return 3


if __name__ == "__main__":
    app.run(main)
