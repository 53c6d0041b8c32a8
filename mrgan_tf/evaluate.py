"""Score one or more models on the paired test patients: the paper's Table I metrics, figures, latency.

Writes metrics.md (printed too), .csv and .json and the figures to --out: the paper's metrics on the
model's slices, and SynthRAD's on each patient's original grid.

Example:
  python -m mrgan_tf.evaluate --model=mrgan=runs/mrgan --model=paired=runs/paired --dataset=data/records --out=runs/eval

Common flags:
  --model=[NAME=]PATH    a training run or SavedModel export (repeat to compare)
  --dataset=DIR          records (their paired_test set) or a dataset root
  --out=DIR              where the tables and figures go
  --nogrid_metrics       the paper's tables only
"""
from mrgan_tf.evaluation.evaluate import define_flags, main, run  # noqa: F401

if __name__ == "__main__":
    run()
