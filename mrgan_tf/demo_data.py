"""``python -m mrgan_tf.demo_data``: the command line of ``mrgan_tf.demo.data``."""
from mrgan_tf.demo.data import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
