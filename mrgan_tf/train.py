"""``python -m mrgan_tf.train``: the command line of ``mrgan_tf.training.train``."""
from mrgan_tf.training.train import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
