"""Tiny records directories for training tests, written without make_records.

Images are smooth random blobs; MR = 1 - CT inside the body, a mapping a tiny
generator can learn in a few hundred steps.
"""
from __future__ import annotations

import json
import os

import numpy as np

from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.records.spec import DatasetSpec
from tfrecords_tools import schema, writer

META = {
    "patient_id": schema.String(), "slice_index": schema.Int(), "num_slices": schema.Int(),
    "placement": schema.Float(length=5), "mr_range": schema.Float(length=2),
    "affine": schema.Float(length=16), "volume_shape": schema.Int(length=3),
}
SET_FIELDS = {"paired_train": ("ct", "mr", "mask"), "unpaired_ct": ("ct", "mask"),
              "unpaired_mr": ("mr", "mask"), "paired_test": ("ct", "mr", "mask")}


def _slice(rng, size):
    yy, xx = np.mgrid[:size, :size] / size
    body = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.16
    ct = np.zeros((size, size), np.float32)
    for _ in range(3):
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.05, 0.15)]
        ct += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    ct = np.clip(0.2 + 0.6 * ct / ct.max(), 0, 1) * body
    mr = (1.0 - ct) * body
    q = lambda a: np.round(a * 255).astype(np.uint8)[..., None]  # noqa: E731
    return q(ct), q(mr), body.astype(np.uint8)[..., None]


def write_tiny_records(out_dir: str, size: int = 32, per_set: int = 12, seed: int = 0,
                       with_val: bool = False) -> DatasetSpec:
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    sets, patients = {}, {}
    set_fields = {**SET_FIELDS, **({"paired_val": ("ct", "mr", "mask")} if with_val else {})}
    for set_name, image_fields in set_fields.items():
        fields = {**{f: schema.Image("uint8") for f in image_fields}, **META}
        with writer.ShardedWriter(out_dir, set_name, fields, examples_per_shard=5) as w:
            for i in range(per_set):
                ct, mr, mask = _slice(rng, size)
                pid = f"{set_name}_p{i // 4}"
                patients[pid] = {"role": "paired" if "paired" in set_name else set_name[-2:],
                                 "split": {"paired_test": "test", "paired_val": "val"}.get(set_name, "train")}
                rec = {"ct": ct, "mr": mr, "mask": mask, "patient_id": pid, "slice_index": i % 4,
                       "num_slices": 4, "placement": [size, size, 0, 0, 1], "mr_range": [0, 1],
                       "affine": np.eye(4).ravel(), "volume_shape": [size, size, 4]}
                w.write({k: rec[k] for k in fields})
        sets[set_name] = w.info
    spec = DatasetSpec(root=out_dir, preprocess=PreprocessConfig(image_size=size), sets=sets,
                       split={"train": sorted(p for p, v in patients.items() if v["split"] == "train"),
                              "test": sorted(p for p, v in patients.items() if v["split"] == "test"),
                              **({"val": sorted(p for p, v in patients.items() if v["split"] == "val")}
                                 if with_val else {})},
                       patients=patients)
    writer.atomic_write_text(os.path.join(out_dir, "dataset.json"), json.dumps(spec.to_dict(), indent=1))
    return DatasetSpec.load(out_dir)
