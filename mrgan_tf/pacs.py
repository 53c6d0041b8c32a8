"""``python -m mrgan_tf.pacs``: the command line of ``mrgan_tf.io.pacs``."""
from mrgan_tf.io.pacs import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
