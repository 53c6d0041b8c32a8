"""mrgan-tf: brain CT -> synthetic MR with MR-GAN (paired + unpaired data), TF2 / Keras 3."""
import os as _os

# TensorFlow's C++ INFO/WARNING lines drown the tools' own progress; errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
