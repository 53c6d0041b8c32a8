"""Run the whole demo in one command: data, records, four trainings, SavedModels, evaluation, report.

Builds the offline demo set, makes records, trains MR-GAN, the paired and unpaired baselines and a
synthetic-CT model (two at once on 2 cores or more), exports them, scores them on the test patients, synthesizes an MR from the real Cranium CT and a
synthetic CT in HU, and writes <out>/report.md. A stage whose output exists and was built with the
same settings is reused, so running it again continues where it stopped.

Example:
  python -m mrgan_tf.demo --out=runs/demo

Common flags:
  --out=DIR      where everything goes
  --steps=N      training iterations per model (default: configs/demo.cfg's)
  --rebuild      redo every stage
  --jobs=N       trainings run at once, the cores shared (default 2 on 2 cores or more)
"""
from mrgan_tf.demo.pipeline import run

run()
