"""``python -m mrgan_tf.demo``: the command line of ``mrgan_tf.demo.pipeline``."""
from mrgan_tf.demo.pipeline import run

run()
