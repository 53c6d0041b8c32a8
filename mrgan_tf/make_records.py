"""``python -m mrgan_tf.make_records``: the command line of ``mrgan_tf.records.make_records``."""
from mrgan_tf.records.make_records import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
