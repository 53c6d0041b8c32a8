"""The generator's upsampling at the demo's synthetic-CT setting: transposed conv vs. resize + conv.

    .venv/bin/python bench/experiments/upsampling.py [--arms transpose,nearest,bilinear] [--seeds 0,1,2]

Each arm is the demo's synthetic-CT stage (``mrgan_tf.demo.sct``) with one flagfile: the
demo data, full-range records (CT over [-1024, 3000] HU at 16 bits), MR-GAN trained as
the stage trains it (the flagfile's own steps and schedule, ``--seed``), scored on the
paired test heads on their own grids inside their masks with the functions ``evaluate``
uses (SynthRAD's MAE in HU, PSNR, 3-D SSIM), plus:

- the checkerboard index (``mrgan_tf.evaluation.checkerboard``): the period-2 amplitude
  of the synthetic CT in the axial plane over the reference's, inside the mask; and the
  period-2 amplitude in HU where the reference is flat (its soft tissue, 2 voxels away
  from any other class: about 2 HU of noise there), so edges of the anatomy do not count;
- where the error is: MAE and mean signed error (a global offset shows there) per
  reference tissue class inside the mask (air, soft tissue, bone) and each class's
  share of the total absolute error.

Each arm names its records (``RECORDS``): the stage's own (``<root>/records_sct``) or the same with MR
registered to CT (``<root>/records_sct_registered``); each setting is built once, timed with the load
average (``<root>/<records>_build.json``), and shared by the arms that ask for it.

Runs live in ``<root>/<arm>/mrgan/seed<k>`` (``table1.Grid``: finished ones are skipped,
unfinished ones resume, each records the checkout it used and its wall time); each
training also records the load average before and after (the machine may be shared).
Results: ``<results>/upsampling.{md,json}`` (the arms run now, plus the other arms already in the json)
and ``--figure`` (seed 0 of the arms run now, one test head: synthetic CT, its error, and a
soft-tissue-window close-up where a checkerboard shows).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import table1  # noqa: E402

from mrgan_tf.demo import pipeline as demo  # noqa: E402
from mrgan_tf.demo import runs  # noqa: E402
from mrgan_tf.demo.sct import BONE_WINDOW, SyntheticCTStage  # noqa: E402
from tfrecords_tools.atomic import atomic_write_text  # noqa: E402

class Arm(NamedTuple):
    """A flagfile, extra train flags, and the records it trains and is scored on (RECORDS)."""
    config: str
    train_flags: tuple[str, ...] = ()
    records: str = "demo"


# Records settings -> (folder under --root, make_records changes to the sct stage's preprocessing). "demo": the
# stage's records as the demo makes them; "registered": the same with MR rigidly registered to CT (mutual
# information, make_records --register, the demo's --register), which the evaluation maps back through.
RECORDS = {"demo": ("records_sct", {}), "registered": ("records_sct_registered", {"register": True})}
# configs/demo.cfg is what the demo's sct stage trained before configs/demo_sct.cfg.
ARMS = {
    "transpose": Arm("configs/demo.cfg"),
    "nearest": Arm("configs/demo.cfg", ("--upsample=nearest",)),
    "bilinear": Arm("configs/demo.cfg", ("--upsample=bilinear",)),
    "demo_sct": Arm("configs/demo_sct.cfg"),        # the flagfile as it stands, on the records the demo makes
    # --lr=1e-3 spelled out: the arm stays what was measured (157.9 HU, 3 seeds) if the flagfile changes again
    "demo_sct_registered": Arm("configs/demo_sct.cfg", ("--lr=1e-3",), "registered"),
}
# Reference tissue classes inside the mask, by the reference CT's HU: [lo, hi).
TISSUES = {"air": (-np.inf, -200.0), "soft tissue": (-200.0, 300.0), "bone": (300.0, np.inf)}
SHOWN = (("sct_mae", "MAE (HU)", 1), ("sct_ssim", "SSIM (3-D)", 3), ("sct_psnr", "PSNR (dB)", 2),
         ("checkerboard_index", "Checkerboard index", 2), ("checkerboard_hu", "Period-2 amplitude (HU)", 1),
         ("checkerboard_flat_hu", "Period-2 amplitude, flat soft tissue (HU)", 1))
FLAT_MARGIN = 2                    # voxels between "flat" soft tissue and any other reference class
SCORES = 2                         # version of score_patient's row: cached rows of another version are redone
SOFT_WINDOW = (40.0, 400.0)        # centre, width in HU: a few tens of HU of pattern are visible

FLAGS = flags.FLAGS  # the Table I runner's --root, --steps (unused: each flagfile's), --seeds, --results, --workers
FLAGS.set_default("root", str(REPO / "runs" / "experiments" / "upsampling"))
flags.DEFINE_list("arms", ["transpose", "nearest", "bilinear"], f"Arms to train and compare: {', '.join(ARMS)}; "
                  "the results keep the other arms already in upsampling.json.")
flags.DEFINE_string("figure", "upsampling.png", "File name of the seed-0 figure of these arms under --results.")


class StageGrid(table1.Grid):
    """One arm's runs, trained with the demo sct stage's command (the flagfile's schedule, not Table I's)."""

    def __init__(self, root: str, name: str, config: str, steps: int, train_flags: Sequence[str], records: str):
        super().__init__(root, name, config, steps, train_flags)
        self.records = records

    def records_for(self, run: str) -> str:
        return self.records

    def command(self, mode: str, seed: int) -> list[str]:
        return [sys.executable, "-m", "mrgan_tf.train", f"--flagfile={self.config}", f"--mode={mode}",
                f"--records={self.records_for(mode)}", f"--out={self.run_dir(mode, seed)}", f"--steps={self.steps}",
                f"--seed={seed}", *self.train_flags]

    def train(self, mode: str, seed: int) -> None:
        before = os.getloadavg()
        super().train(mode, seed)
        path = os.path.join(self.run_dir(mode, seed), "experiment.json")
        state = table1._read_json(path)
        state["load_average"] = {"before": list(before), "after": list(os.getloadavg())}
        table1._write_json(path, state)


def build_inputs(root: str, workers: int, settings: Sequence[str]) -> tuple[str, dict[str, str], dict[str, dict]]:
    """Demo data (the demo's own stage) and the sct stage's records for each of ``settings``, each reused when
    present and built once otherwise; (data, {setting: records}, {setting: how long its build took, at what load}).

    The "demo" setting is the folder and preprocessing the arms have always used, so their runs stay finished.
    """
    import dataclasses

    from mrgan_tf.records.make_records import make_records
    from mrgan_tf.records.spec import DatasetSpec

    d = demo.Demo(demo.DemoOptions(out=root, workers=workers).resolved())
    status, commands = d.stage_data()
    table1.say(f"{status}: {'; '.join(commands)}")
    base = SyntheticCTStage(d).preprocess_config()
    folders, builds = {}, {}
    for setting in dict.fromkeys(settings):
        folder, changes = RECORDS[setting]
        path, cfg = os.path.join(root, folder), dataclasses.replace(base, **changes)
        log = path + "_build.json"          # beside the records: make_records --overwrite replaces the folder
        if not os.path.isfile(os.path.join(path, "dataset.json")) or DatasetSpec.load(path).preprocess != cfg:
            table1.say(f"records {setting}: building {path}")
            before, t0 = os.getloadavg(), time.perf_counter()
            make_records(d.data, path, cfg, manifest=os.path.join(d.data, "demo_manifest.csv"), overwrite=True,
                         workers=workers, progress=False)
            table1._write_json(log, {"seconds": time.perf_counter() - t0, "workers": workers,
                                     "load_average": {"before": list(before), "after": list(os.getloadavg())},
                                     "preprocess": cfg.to_dict(), "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        folders[setting], builds[setting] = path, table1._read_json(log)
    return d.data, folders, builds


# --------------------------------------------------------------------------- scoring


def error_by_tissue(ref: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict:
    """Per reference tissue class inside ``mask``: voxel share, MAE, mean signed error, share of the total |error|."""
    err = pred.astype(np.float64) - ref
    total = np.abs(err[mask]).sum()
    out = {"mean_signed_error": float(err[mask].mean())}
    for name, (lo, hi) in TISSUES.items():
        m = mask & (ref >= lo) & (ref < hi)
        e = err[m]
        out[name] = {"voxels": float(m.sum() / mask.sum()),
                     "mae": float(np.abs(e).mean()) if e.size else None,
                     "mean_signed_error": float(e.mean()) if e.size else None,
                     "share_of_error": float(np.abs(e).sum() / total) if total else None}
    return out


def score_patient(predictor, files: Mapping[str, str | None], cfg, ct_to_mr: np.ndarray | None = None
                  ) -> tuple[dict, dict]:
    """SynthRAD CT metrics, checkerboard and error breakdown of one head; and its volumes (for the figure).

    ``ct_to_mr``: the records' registration (``TestPatient.ct_to_mr``), as ``evaluate`` applies it.
    """
    from scipy.ndimage import binary_erosion

    from mrgan_tf.evaluation import checkerboard, synthrad_metrics
    from mrgan_tf.evaluation.grid import reference_mask
    from mrgan_tf.inference.synthesis import AIR_HU, synthesize_volume
    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.preprocess import resample_like, to_canonical

    ct, mr = to_canonical(read_volume(files["ct"])), read_volume(files["mr"])
    mask, _ = reference_mask(ct, files.get("mask"), cfg)
    sct, _ = synthesize_volume(predictor, mr)
    on_ct = resample_like(sct, ct, order=1, transform=ct_to_mr, fill=AIR_HU).data.astype(np.float64)
    ref = np.asarray(ct.data, np.float64)
    row = synthrad_metrics.synthrad_ct_metrics(ref, on_ct, mask)
    row = {f"sct_{k}": float(v) for k, v in row.items()}
    row["checkerboard_hu"] = checkerboard.amplitude(on_ct, mask)          # canonical: axes 0, 1 = axial plane
    row["checkerboard_reference_hu"] = checkerboard.amplitude(ref, mask)
    row["checkerboard_index"] = row["checkerboard_hu"] / row["checkerboard_reference_hu"]
    lo, hi = TISSUES["soft tissue"]
    flat = binary_erosion(mask & (ref >= lo) & (ref < hi), iterations=FLAT_MARGIN)
    row["checkerboard_flat_hu"] = checkerboard.amplitude(on_ct, flat)
    row["checkerboard_flat_reference_hu"] = checkerboard.amplitude(ref, flat)
    row["error_by_tissue"] = error_by_tissue(ref, on_ct, mask)
    return row, {"ct": ref, "sct": on_ct, "mask": mask}


def score_run(export: str, data_root: str, records: str) -> dict:
    """{patient: row} of one run's mr2ct export (cached beside the run, keyed by the export's version)."""
    from mrgan_tf.evaluation.grid import original_files
    from mrgan_tf.evaluation.patients import load_records_patients
    from mrgan_tf.inference.predictors import load_predictor
    from mrgan_tf.serving.export import resolve_version_dir

    key = {"export": resolve_version_dir(export, "mr2ct"), "scores": SCORES}
    cache = os.path.join(os.path.dirname(export), "upsampling_eval.json")
    done = table1._read_json(cache)
    if done.get("export") == key:
        return done["patients"]
    patients, cfg = load_records_patients(records)
    files = original_files(data_root, patients)
    predictor = load_predictor(export, "mr2ct")
    t0 = time.perf_counter()
    rows = {pid: score_patient(predictor, files[pid], cfg, p.ct_to_mr)[0] for pid, p in sorted(patients.items())}
    table1._write_json(cache, {"export": key, "patients": rows, "seconds": time.perf_counter() - t0})
    return rows


# --------------------------------------------------------------------------- aggregation and report


def patient_average(rows: Mapping[str, Mapping]) -> dict:
    """The mean over test heads of every scalar and of the per-tissue MAE and signed error."""
    avg = {k: float(np.mean([r[k] for r in rows.values()])) for k, *_ in SHOWN}
    avg["checkerboard_flat_reference_hu"] = float(np.mean([r["checkerboard_flat_reference_hu"]
                                                          for r in rows.values()]))
    avg["mean_signed_error"] = float(np.mean([r["error_by_tissue"]["mean_signed_error"] for r in rows.values()]))
    for t in TISSUES:
        for k in ("mae", "mean_signed_error", "share_of_error", "voxels"):
            vals = [r["error_by_tissue"][t][k] for r in rows.values() if r["error_by_tissue"][t][k] is not None]
            avg[f"{t} {k}"] = float(np.mean(vals)) if vals else None
    return avg


def summary_markdown(arms: Mapping[str, Mapping[int, dict]], timings: Mapping[str, Mapping[int, dict]],
                     specs: Mapping[str, Mapping] | None = None, builds: Mapping[str, Mapping] | None = None) -> str:
    """Arms x metrics (mean ± sd over seeds of the head average), then per-seed values and where the error is;
    with ``specs``/``builds`` (the results json's "arms"/"records"): each arm's settings and the records' builds."""
    cell = lambda v, n: "-" if v is None else f"{v:.{n}f}"  # noqa: E731
    lines = []
    if specs:
        lines += ["| Arm | Flagfile | Train flags | Records |", "|---|---|---|---|"]
        lines += [f"| {a} | `{specs[a]['config']}` | {' '.join(f'`{f}`' for f in specs[a]['train_flags']) or '-'} "
                  f"| {specs[a].get('records', 'demo')} |" for a in arms]
        lines += [""]
    lines += ["| Arm | n | " + " | ".join(label for _, label, _ in SHOWN) + " | Training (s) |",
              "|---|---:|" + "---:|" * (len(SHOWN) + 1)]
    for arm, per_seed in arms.items():
        cells = []
        for k, _, n in SHOWN:
            v = np.array([a[k] for a in per_seed.values()])
            cells.append(f"{v.mean():.{n}f} ± {v.std():.{n}f}")
        secs = [t["seconds"] for t in timings[arm].values() if t]
        lines.append(f"| {arm} | {len(per_seed)} | " + " | ".join(cells) + f" | {np.mean(secs):.0f} |")
    lines += ["", "Per seed (average of the test heads):", "",
              "| Arm | Seed | " + " | ".join(label for _, label, _ in SHOWN) + " | Mean signed error (HU) | "
              "Training (s) | Load before / after |", "|---|---:|" + "---:|" * (len(SHOWN) + 3)]
    for arm, per_seed in arms.items():
        for seed, a in per_seed.items():
            t = timings[arm][seed] or {}
            load = t.get("load_average")
            lines.append(f"| {arm} | {seed} | " + " | ".join(cell(a[k], n) for k, _, n in SHOWN)
                         + f" | {a['mean_signed_error']:+.1f} | {cell(t.get('seconds'), 0)} | "
                         + ("-" if not load else f"{load['before'][0]:.1f} / {load['after'][0]:.1f}") + " |")
    lines += ["", "Where the error is (mean over seeds and heads; classes by the reference CT inside the mask):", "",
              "| Arm | " + " | ".join(f"{t}: MAE / signed / share" for t in TISSUES) + " |",
              "|---|" + "---:|" * len(TISSUES)]
    for arm, per_seed in arms.items():
        cells = []
        for t in TISSUES:
            m = [float(np.mean([a[f"{t} {k}"] for a in per_seed.values()])) for k in ("mae", "mean_signed_error",
                                                                                     "share_of_error")]
            cells.append(f"{m[0]:.0f} / {m[1]:+.0f} / {100 * m[2]:.0f} %")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    voxels = next(iter(next(iter(arms.values())).values()))
    lines += ["", "Voxel share of each class: " + ", ".join(f"{t} {100 * voxels[f'{t} voxels']:.0f} %"
                                                          for t in TISSUES) + "; the reference's period-2 "
              f"amplitude in flat soft tissue: {voxels['checkerboard_flat_reference_hu']:.1f} HU."]
    timed = {k: b for k, b in (builds or {}).items() if b.get("seconds") is not None}
    if timed:
        lines += ["", "Records builds (the sct stage's records; each setting built once, shared by its arms):", "",
                  "| Records | Folder | Build (s) | Workers | Load before / after | Ended |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| {k} | {b.get('folder', '-')} | {b['seconds']:.0f} | {b.get('workers', '-')} | "
                  f"{b['load_average']['before'][0]:.1f} / {b['load_average']['after'][0]:.1f} | "
                  f"{b.get('ended', '-')} |" for k, b in timed.items()]
    return "\n".join(lines) + "\n"


def figure(path: str, volumes: Mapping[str, dict], patient: str) -> str:
    """Per arm: synthetic CT (bone window), its error (±500 HU) and a soft-tissue close-up; the reference last."""
    from matplotlib.figure import Figure

    from mrgan_tf.preprocess import axial_image

    first = next(iter(volumes.values()))
    k = int(np.argmax(first["mask"].sum(axis=(0, 1))))          # the axial slice with the most body
    names = [*volumes, "reference CT"]
    fig = Figure(figsize=(3.0 * len(names), 9.0))
    (c, w), (sc, sw) = BONE_WINDOW, SOFT_WINDOW
    for j, name in enumerate(names):
        v = first if name == "reference CT" else volumes[name]
        img = axial_image(v["ct"] if name == "reference CT" else v["sct"], k)
        err = axial_image(v["sct"] - v["ct"], k) if name != "reference CT" else None
        h, wd = img.shape
        crop = img[h // 2 - 16:h // 2 + 16, wd // 2 - 16:wd // 2 + 16]
        panels = [(img, "gray", c - w / 2, c + w / 2, f"{name}\nL{c:g}/W{w:g} HU"),
                  (err, "RdBu_r", -500, 500, "synthetic - reference\n±500 HU"),
                  (crop, "gray", sc - sw / 2, sc + sw / 2, f"centre 32x32 px\nL{sc:g}/W{sw:g} HU")]
        for i, (im, cmap, lo, hi, title) in enumerate(panels):
            ax = fig.add_subplot(3, len(names), i * len(names) + j + 1)
            ax.axis("off")
            if im is None:
                continue
            ax.imshow(im, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=8)
    fig.suptitle(f"{patient}, axial slice {k}, seed 0", fontsize=10)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)
    return path


def flagfile_steps(path: str) -> int:
    """A flagfile's --steps as train reads it, through the flagfiles it nests (configs/demo_sct.cfg sets none
    of its own): the last one set wins."""
    import re

    def last(p: str) -> int | None:
        value = None
        for line in Path(p).read_text().splitlines():
            nested = re.match(r"^\s*--flagfile[=\s]\s*(\S+)\s*$", line)
            if nested:
                f = nested.group(1)
                value = last(f if os.path.isabs(f) else str(REPO / f)) or value
            elif re.match(r"^\s*--steps[=\s]", line):
                value = int(re.split(r"[=\s]", line.strip(), maxsplit=1)[1])
        return value

    steps = last(path)
    if steps is None:
        raise table1.ExperimentError(f"{path}: no --steps in it or the flagfiles it nests")
    return steps


def carried_over(path: str, arms: Sequence[str]) -> dict:
    """The arms of an earlier results json that this invocation does not run, so that one arm can be added
    (or rerun) without retraining the others; each keeps the checkout and CPU it was measured with."""
    old = table1._read_json(path)
    out: dict = {k: {} for k in ("arms", "commands", "timings", "per_seed", "per_patient")}
    for a, spec in (old.get("arms") or {}).items():
        if a in arms:
            continue
        out["arms"][a] = {"records": "demo", "code": old.get("code"), "cpu": old.get("cpu"), **spec}
        out["commands"].update({k: v for k, v in old["commands"].items() if k.split("/")[0] == a})
        for k in ("timings", "per_seed", "per_patient"):
            out[k][a] = {int(s): v for s, v in old[k][a].items()}
    return out


def run() -> int:
    arms = table1.check_choices("arms", FLAGS.arms, list(ARMS))
    seeds = [int(s) for s in FLAGS.seeds]
    root = os.path.abspath(FLAGS.root)
    t0 = time.perf_counter()
    data_root, records, builds = build_inputs(root, FLAGS.workers, [ARMS[a].records for a in arms])
    grids = {}
    for arm in arms:
        config = str(REPO / ARMS[arm].config)
        table1.check_flagfile(config)
        grids[arm] = StageGrid(root, arm, config, flagfile_steps(config), ARMS[arm].train_flags,
                               records[ARMS[arm].records])
    per_arm: dict = {a: {} for a in arms}
    raw: dict = {a: {} for a in arms}
    for seed in seeds:                                  # seed-major: an interrupted run still compares arms
        for arm, grid in grids.items():
            if not grid.finished("mrgan", seed):
                grid.train("mrgan", seed)
            raw[arm][seed] = score_run(os.path.join(grid.run_dir("mrgan", seed), "export"), data_root, grid.records)
            per_arm[arm][seed] = patient_average(raw[arm][seed])
            table1.say(f"[{arm} seed {seed}] " + ", ".join(f"{label} {per_arm[arm][seed][k]:.{n}f}"
                                                            for k, label, n in SHOWN))
    timings = {a: {s: {**(g.state("mrgan", s).get("finished") or {}),
                       "load_average": g.state("mrgan", s).get("load_average")} for s in seeds}
               for a, g in grids.items()}
    os.makedirs(FLAGS.results, exist_ok=True)
    from mrgan_tf.evaluation.grid import original_files
    from mrgan_tf.evaluation.patients import load_records_patients
    from mrgan_tf.inference.predictors import load_predictor
    vols, pid = {}, None
    for a, g in grids.items():                          # each arm on its own records (their registration)
        patients, cfg = load_records_patients(g.records)
        pid = pid or sorted(patients)[0]
        files = original_files(data_root, patients)[pid]
        vols[a] = score_patient(load_predictor(os.path.join(g.run_dir("mrgan", seeds[0]), "export"), "mr2ct"),
                                files, cfg, patients[pid].ct_to_mr)[1]
    png = figure(os.path.join(FLAGS.results, FLAGS.figure), vols, pid)
    code, cpu = table1.code_version(), _cpu_model()
    doc = {"seeds": seeds, "arms": {a: {"config": ARMS[a].config, "train_flags": list(ARMS[a].train_flags),
                                        "records": ARMS[a].records, "steps": grids[a].steps, "code": code,
                                        "cpu": cpu} for a in arms},
           "commands": {f"{a}/seed{s}": runs.cmd_text(g.command("mrgan", s)) for a, g in grids.items()
                        for s in seeds},
           "timings": timings, "per_seed": per_arm, "per_patient": raw,
           "records": {k: {"folder": os.path.basename(records[k]), **builds[k]} for k in records},
           "code": code, "cpu": cpu, "wall_seconds": time.perf_counter() - t0}
    json_path = os.path.join(FLAGS.results, "upsampling.json")
    old = carried_over(json_path, arms)
    for k, v in old.items():
        doc[k] = {**v, **doc[k]}
    doc["records"] = {**table1._read_json(json_path).get("records", {}), **doc["records"]}
    md = summary_markdown(doc["per_seed"], doc["timings"], doc["arms"], doc["records"])
    atomic_write_text(os.path.join(FLAGS.results, "upsampling.md"), md)
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    print(md)
    print(f"wrote {png} and upsampling.{{md,json}} in {time.perf_counter() - t0:.0f} s")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def main(argv: Sequence[str]):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run()


if __name__ == "__main__":
    app.run(main)
