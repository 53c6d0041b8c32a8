"""Train MR-GAN (or the paired or unpaired baseline) on records written by make_records.

Writes a run folder: checkpoints, TensorBoard logs, history.csv and, at the end, SavedModels for
serving (export/ct2mr/<version>, export/mr2ct/<version>). Running the same command again resumes
from the last checkpoint. Prints a progress line every few iterations and, at the end, the
checkpoint and SavedModels it wrote.

Example:
  python -m mrgan_tf.train --flagfile=configs/demo.cfg --records=runs/demo/records --out=runs/demo/mrgan

Common flags:
  --flagfile=FILE        settings from configs/ (mrgan.cfg: the paper's; demo.cfg: minutes on a CPU)
  --records=DIR          records written by make_records
  --out=DIR              the run folder (resumed when it holds a checkpoint)
  --mode=mrgan|paired|unpaired  --steps=N  --batch_size=N
  --progress_every=N     iterations between progress lines (default: about 20 a run)
  --verbose=0|1|2        0: only the end result; 2: also TensorFlow's log lines
  --noexport             no SavedModels at the end
"""
from mrgan_tf.training.signals import exit_until_armed

exit_until_armed("train")   # TensorFlow loads for seconds: a SIGTERM meanwhile exits 75, like one a moment later
from mrgan_tf.training.train import define_flags, main, run  # noqa: E402,F401

if __name__ == "__main__":
    run()
