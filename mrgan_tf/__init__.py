"""mrgan-tf: brain CT -> synthetic MR with MR-GAN (paired + unpaired data), TF2 / Keras 3."""
from tfrecords_tools import console as _console

# TensorFlow's C++ INFO/WARNING lines drown the tools' own progress; errors still show.
_console.quiet_tensorflow()
