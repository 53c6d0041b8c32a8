"""``python -m mrgan_tf.evaluate``: the command line of ``mrgan_tf.evaluation.evaluate``."""
from mrgan_tf.evaluation.evaluate import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
