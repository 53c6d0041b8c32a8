"""``python -m mrgan_tf.client``: the command line of ``mrgan_tf.inference.client``."""
from mrgan_tf.inference.client import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
