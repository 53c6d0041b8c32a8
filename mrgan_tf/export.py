"""Export a training run's generators as SavedModels for TF Serving (and synthesize).

Writes <export_dir>/ct2mr/<version>/ and <export_dir>/mr2ct/<version>/ (a new version number each
time) plus models.config, and prints the version and the folders it wrote.

Example:
  python -m mrgan_tf.export --run=runs/mrgan

Common flags:
  --run=DIR                  the training run
  --export_checkpoint=best   the best checkpoint by validation instead of the last (--checkpoint: any)
  --export_dir=DIR           default: <run>/export
  --version=N                default: the next free number
"""
from mrgan_tf.serving.export import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
