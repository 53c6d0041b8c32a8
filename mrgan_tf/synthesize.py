"""``python -m mrgan_tf.synthesize``: the command line of ``mrgan_tf.inference.synthesize``."""
from mrgan_tf.inference.synthesize import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
