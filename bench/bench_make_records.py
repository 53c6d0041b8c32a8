"""Benchmark: make_records conversion throughput on head-size synthetic volumes.

Builds (once, cached in --data) 20 volumes of SynthRAD brain size (180 x 220 x 150
voxels at 1 mm, head and neck filling most axial slices, int16 .nii.gz: 7 paired patients, 3 CT-only, 3 MR-only), converts
them without registration and reports kept slices written per second of wall time
plus the per-stage totals (read and prepare in the workers, write in the main process).

    .venv/bin/python bench/bench_make_records.py --workers=2
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from scipy import ndimage

from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_nifti
from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.records.summary import format_summary
from mrgan_tf.records.make_records import make_records

SHAPE = (180, 220, 150)
N_PAIRED, N_CT, N_MR = 7, 3, 3

_DATA = flags.DEFINE_string("data", os.path.join(tempfile.gettempdir(), "mrgan_bench_make_records"),
                            "Where the synthetic input volumes are built (reused when present).")
_WORKERS = flags.DEFINE_integer("workers", 2, "make_records --workers.")
_REPEAT = flags.DEFINE_integer("repeat", 1, "Conversions to time (the best is reported).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")


def head_volumes(rng: np.random.Generator) -> tuple[Volume, Volume]:
    """CT (HU) and T2-like MR of a random ellipsoid head with smooth texture and noise."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2
    axes = [np.arange(n, dtype=np.float32) - (n - 1) / 2 for n in SHAPE]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    radii = np.array([70.0, 88.0, 80.0]) * rng.uniform(0.92, 1.04, 3)
    centre = rng.uniform(-4, 4, 3) + [0, 0, 8]
    r = np.sqrt(((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                + ((z - centre[2]) / radii[2]) ** 2)
    neck = np.sqrt(((x - centre[0]) / 48) ** 2 + ((y - centre[1] - 10) / 55) ** 2) + 0 * z
    r = np.minimum(r, np.where(z < centre[2] - 30, neck, np.inf))  # head on a neck, like SynthRAD brain scans
    texture = ndimage.zoom(rng.normal(0, 1, (12, 14, 10)), np.array(SHAPE) / (12, 14, 10), order=3)
    texture = texture[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(np.float32)
    scalp, skull, brain = r < 1.0, (r < 0.93) & (r >= 0.85), r < 0.85
    ct = np.full(SHAPE, -1000, np.float32)
    ct[scalp] = 20
    ct[skull] = 900
    ct[brain] = 35 + 8 * texture[brain]
    ct += rng.normal(0, 6, SHAPE).astype(np.float32)
    mr = np.zeros(SHAPE, np.float32)
    mr[scalp] = 250
    mr[skull] = 40
    mr[brain] = 500 + 120 * texture[brain]
    mr += np.abs(rng.normal(0, 15, SHAPE)).astype(np.float32)
    return Volume(np.rint(ct), affine, "ct"), Volume(np.rint(mr), affine, "mr")


def build_dataset(root: Path) -> int:
    """Write the synthetic patients; returns the number of volumes."""
    if (root / "done").exists():
        return sum(1 for _ in root.glob("*/*.nii.gz"))
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    plan = [("paired", ("ct", "mr"))] * N_PAIRED + [("ct", ("ct",))] * N_CT + [("mr", ("mr",))] * N_MR
    n = 0
    for i, (role, modalities) in enumerate(plan):
        ct, mr = head_volumes(rng)
        for m in modalities:
            write_nifti({"ct": ct, "mr": mr}[m], root / f"{role}{i:02d}" / f"{m}.nii.gz", dtype=np.int16)
            n += 1
    (root / "done").write_text("")
    return n


def _cpu() -> dict[str, float]:
    """User+system CPU seconds of this process and of its finished children (the workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"main": own.ru_utime + own.ru_stime, "workers": kids.ru_utime + kids.ru_stime}


def main(argv) -> None:
    del argv
    data = Path(_DATA.value)
    t0 = time.perf_counter()
    n_volumes = build_dataset(data / "root")
    print(f"{n_volumes} input volumes of {SHAPE} in {data / 'root'} (built/checked in {time.perf_counter() - t0:.1f} s)")
    best = None
    load_before = os.getloadavg()[0]
    for _ in range(_REPEAT.value):
        before = _cpu()
        summary = make_records(data / "root", data / "records", PreprocessConfig(), test_patients=2,
                               workers=_WORKERS.value, overwrite=True)
        summary["process_cpu_seconds"] = {k: round(v - before[k], 2) for k, v in _cpu().items()}
        if best is None or summary["seconds"] < best["seconds"]:
            best = summary
    load = (load_before, os.getloadavg()[0])
    print(format_summary(best))
    cpu = best["stage_cpu_seconds"]
    pc = best["process_cpu_seconds"]
    print(f"CPU time of the whole run: main process {pc['main']:.1f} s, workers {pc['workers']:.1f} s "
          f"-> at best {(pc['main'] + pc['workers']) / 2:.1f} s wall on 2 idle cores")
    print(f"{os.cpu_count()} CPU(s); 1-min load average {load[0]:.1f} before, {load[1]:.1f} after "
          f"(other processes share the CPUs when it is above 0); CPU per kept slice: "
          f"{1e3 * sum(cpu.values()) / sum(best['slices'].values()):.2f} ms")
    result = {"volumes": n_volumes, "shape": SHAPE, "total_slices": sum(best["slices"].values()),
              "load_average": load, **best}
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
