"""``python -m mrgan_tf.export``: the command line of ``mrgan_tf.serving.export``."""
from mrgan_tf.serving.export import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
