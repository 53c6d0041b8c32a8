"""The one-command demo: data -> records -> three trainings -> SavedModels -> evaluation -> synthesis -> report.

    python -m mrgan_tf.demo [--out runs/demo] [--rebuild] [--steps N] [--size_scale 1] [--seed 0]

Stages (each reused when its output exists and was built with the same settings;
``--rebuild`` redoes everything; a stage that is redone makes every later one redo):

1. ``<out>/data``: the offline demo set (``demo.data.build_demo_dataset``);
2. ``<out>/records``: ``make_records`` with the set's own train/test manifest, and ``<out>/records_sct``,
   the same heads with CT over its full HU range for the synthetic-CT model (``demo.sct``);
3. ``<out>/{mrgan,paired,unpaired}``: ``python -m mrgan_tf.train --flagfile=configs/demo.cfg``, one
   process per mode (processes keep TF state apart), and ``<out>/sct`` (configs/demo_sct.cfg on
   records_sct); ``--jobs`` of them at once (2 where there are 2 cores or more), the cores shared.
   A run already at ``--steps`` is not started again; a shorter one resumes;
4. SavedModels in ``<run>/export`` (train writes them; re-exported here if missing);
5. ``<out>/eval``: the three models side by side on the paired test patients;
6. ``<out>/cranium_syn_mr.nii.gz`` + PNG: the MR-GAN model applied to the real Cranium CT;
7. ``<out>/eval_sct*``: the synthetic CT in HU scored as SynthRAD does, its uncertainty and dose check
   (two ``evaluate`` children, started when its training ends), bone-window PNGs;
8. ``<out>/report.md``: commands, times, the Table I-style comparison, the sCT row, figures, paths.

``run_demo(DemoOptions(...))`` is the importable entry point (tests use it with
tiny networks). Flags are defined only when this module is the program
(``cli.entry_point``), as for every tool.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from absl import flags

from mrgan_tf import cli
from mrgan_tf.demo.report import stage_report, write_synthesis_png
from mrgan_tf.demo.runs import MODES, TRAININGS, DemoError, TrainingStage, available_cores, cmd_text, say

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE_IMAGE_SIZE = 128          # slice size at size_scale 1 (128 px x 2 mm = 256 mm field of view)
STATE_NAME = "demo_state.json"
SYN_NAME = "cranium_syn_mr.nii.gz"
REUSED = ("reused", "present")  # stage statuses that did no work
@dataclasses.dataclass
class DemoOptions:
    """Everything that decides what the demo builds (the CLI flags map 1:1 onto these)."""

    out: str = "runs/demo"
    rebuild: bool = False
    steps: int | None = None              # None: the flagfile's --steps
    size_scale: float = 1.0               # demo data voxel size = 2 mm / size_scale
    seed: int = 0
    config: str | None = None             # train flagfile (default configs/demo.cfg)
    sct_config: str | None = None         # the synthetic-CT stage's train flagfile (default configs/demo_sct.cfg)
    dose_patients: int = 1                # the synthetic-CT stage's dose check: on this many test heads (0: none)
    sct_register: bool = True             # the synthetic-CT stage's records: MR registered to CT (demo_sct.cfg's
                                          # measured MAE needs it: docs/RESULTS.md, "Generator upsampling")
    image_size: int | None = None         # None: 128 * size_scale (a multiple of 4)
    spacing_mm: float | None = None       # None: the demo data's own voxel size
    register: bool = False                # MI registration of MR to CT in make_records
    ct_range: tuple[float, float] | None = None   # records with CT over this HU range (16 bits), not the window
    train_flags: tuple[str, ...] = ()     # extra train flags, after the flagfile (e.g. --ngf=4)
    jobs: int | None = None               # trainings run at once (None: 2 where there are >= 2 cores)
    workers: int = 2                      # make_records worker processes

    def resolved(self) -> "DemoOptions":
        """Defaults filled in, paths absolute, values checked."""
        o = dataclasses.replace(self, out=os.path.abspath(self.out), train_flags=tuple(self.train_flags))
        if not 0.1 <= o.size_scale <= 2.0:
            raise DemoError(f"--size_scale must be in [0.1, 2], got {o.size_scale}")
        from mrgan_tf.demo.data import BASE_SPACING_MM
        if o.spacing_mm is None:
            o.spacing_mm = BASE_SPACING_MM / o.size_scale
        if o.image_size is None:
            o.image_size = max(32, 4 * round(BASE_IMAGE_SIZE * o.size_scale / 4))
        if o.image_size % 4:
            raise DemoError(f"--image_size must be a multiple of 4 (two stride-2 generator stages), got {o.image_size}")
        o.config = os.path.abspath(o.config or _default_config("demo.cfg"))
        o.sct_config = os.path.abspath(o.sct_config or _default_config("demo_sct.cfg"))
        for path in (o.config, o.sct_config):
            if not os.path.isfile(path):
                raise DemoError(f"{path}: train flagfile not found")
        if o.steps is None:
            o.steps = _flagfile_int(o.config, "steps")
        if o.steps is None or o.steps < 1:
            raise DemoError(f"{o.config}: no --steps >= 1 in the flagfile and none given with --steps")
        if o.jobs is None:
            o.jobs = 2 if available_cores() >= 2 else 1
        if o.jobs < 1:
            raise DemoError(f"--jobs must be >= 1, got {o.jobs}")
        return o


def _default_config(name: str) -> str:
    """configs/<name> of the source tree, else of the working directory."""
    path = REPO_CONFIGS / name
    return str(path if path.is_file() else Path("configs") / name)


def _flagfile_int(path: str, name: str) -> int | None:
    """The last ``--name=N`` in a flagfile (None when absent)."""
    value = None
    with open(path) as f:
        for line in f:
            m = re.match(rf"^\s*--{name}[=\s]\s*(-?\d+)\s*$", line)
            if m:
                value = int(m.group(1))
    return value


# --------------------------------------------------------------------------- progress and stages


class Stages:
    """Stage headers with elapsed time, per-stage timings and the commands, for the report."""

    def __init__(self, total: int, state: "State"):
        self.t0 = time.perf_counter()
        self.total, self.state = total, state
        self.rows: list[dict[str, Any]] = []

    def elapsed(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"{s // 60}:{s % 60:02d}"

    def run(self, name: str, fn: Callable[[], tuple[str, list[str]]]) -> None:
        """``fn`` returns (status, commands); status is "built", "reused", ..."""
        print(f"\n=== [{len(self.rows) + 1}/{self.total}] {name}  (elapsed {self.elapsed()}) ===", flush=True)
        t = time.perf_counter()
        status, commands = fn()
        seconds = time.perf_counter() - t
        if status not in REUSED:
            self.state.set_seconds(name, seconds)
        self.rows.append({"stage": name, "status": status, "seconds": seconds, "commands": commands,
                          "built_seconds": self.state.seconds(name)})
        print(f"--- {name}: {status} in {seconds:.1f} s", flush=True)


# --------------------------------------------------------------------------- state (what was built with what)


class State:
    """``<out>/demo_state.json``: the settings each stage's output was built with."""

    def __init__(self, out: str):
        self.path = os.path.join(out, STATE_NAME)
        try:
            with open(self.path) as f:
                self.data = json.load(f)
        except (OSError, ValueError):
            self.data = {}

    def matches(self, stage: str, key: Any) -> bool:
        return self.data.get(stage) == json.loads(json.dumps(key))

    def forget(self, stage: str) -> None:
        self.data.pop(stage, None)
        self._save()

    def record(self, stage: str, key: Any) -> None:
        self.data[stage] = json.loads(json.dumps(key))
        self._save()

    def seconds(self, name: str) -> float | None:
        """How long ``name`` took when it was last built (kept across runs for the report)."""
        return self.data.get("seconds", {}).get(name)

    def set_seconds(self, name: str, seconds: float) -> None:
        self.data.setdefault("seconds", {})[name] = round(seconds, 1)
        self._save()

    def _save(self) -> None:
        from tfrecords_tools.writer import atomic_write_text
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


# --------------------------------------------------------------------------- the stages


class Demo:
    """One demo run; each ``stage_*`` returns (status, commands) for ``Stages.run``."""

    def __init__(self, opts: DemoOptions):
        self.o = opts
        self.out = opts.out
        self.data = os.path.join(self.out, "data")
        self.records = os.path.join(self.out, "records")
        self.eval = os.path.join(self.out, "eval")
        self.figures = os.path.join(self.out, "figures")
        self.logs = os.path.join(self.out, "logs")
        self.runs = {m: os.path.join(self.out, m) for m in MODES}
        self.exports: dict[str, dict[str, str]] = {}
        self.iterations: dict[str, int] = {}
        self.dirty = opts.rebuild      # an earlier stage was redone: later ones must be too
        os.makedirs(self.logs, exist_ok=True)
        self.state = State(self.out)
        self.metrics_md = ""
        self.syn: dict[str, Any] = {}
        self.loss_pngs: dict[str, str] = {}
        from mrgan_tf.demo.sct import SyntheticCTStage
        self.sct = SyntheticCTStage(self)
        self.run_dirs = {**self.runs, "sct": self.sct.run_dir}   # every training (runs.TRAININGS)

    # ---- helpers
    def reusable(self, stage: str, key: Any, exists: bool) -> bool:
        """Whether ``stage``'s output (``exists``) was built with ``key`` and no earlier stage was redone."""
        return not self.dirty and exists and self.state.matches(stage, key)

    def _reuse(self, stage: str, key: Any, exists: bool) -> bool:
        """True when ``stage`` can be reused; otherwise forgets it and marks later stages dirty."""
        if self.reusable(stage, key, exists):
            return True
        self.state.forget(stage)
        self.dirty = True
        return False

    def preprocess_config(self):
        from mrgan_tf.preprocess import PreprocessConfig
        full = self.o.ct_range is not None
        return PreprocessConfig(spacing_mm=self.o.spacing_mm, image_size=self.o.image_size, register=self.o.register,
                                ct_range=self.o.ct_range, bits=16 if full else 8)

    def records_command(self) -> list[str]:
        cmd = ["python", "-m", "mrgan_tf.make_records", f"--root={self.data}", f"--out={self.records}",
               f"--manifest={os.path.join(self.data, 'demo_manifest.csv')}", f"--spacing_mm={self.o.spacing_mm:g}",
               f"--image_size={self.o.image_size}", f"--workers={self.o.workers}", "--overwrite"]
        if self.o.ct_range is not None:
            cmd += [f"--ct_range={self.o.ct_range[0]:g},{self.o.ct_range[1]:g}", "--bits=16"]
        return cmd + (["--register"] if self.o.register else [])

    def train_command(self, mode: str) -> list[str]:
        """The train command of one of ``runs.TRAININGS``."""
        if mode == "sct":
            return self.sct.train_command()
        return [sys.executable, "-m", "mrgan_tf.train", f"--flagfile={self.o.config}", f"--mode={mode}",
                f"--records={self.records}", f"--out={self.runs[mode]}", f"--steps={self.o.steps}",
                f"--seed={self.o.seed}", *self.o.train_flags]

    # ---- 1. data
    def stage_data(self):
        from mrgan_tf.demo.data import build_demo_dataset
        key = {"seed": self.o.seed, "size_scale": self.o.size_scale}
        cmd = [f"python -m mrgan_tf.demo_data --out={self.data} --seed={self.o.seed} "
               f"--size_scale={self.o.size_scale:g} --overwrite"]
        if self._reuse("data", key, os.path.isfile(os.path.join(self.data, "demo_summary.json"))):
            say(f"reusing {self.data}")
            return "reused", cmd
        summary = build_demo_dataset(self.data, seed=self.o.seed, size_scale=self.o.size_scale, overwrite=True)
        say(f"wrote {len(summary['patients'])} patients ({summary['total_bytes'] / 1e6:.1f} MB) at "
             f"{summary['spacing_mm']:g} mm to {self.data}")
        for w in summary["warnings"]:
            say(f"WARNING: {w}")
        self.state.record("data", key)
        return "built", cmd

    # ---- 2. records
    def stage_records(self):
        from mrgan_tf.records.summary import format_summary
        from mrgan_tf.records.make_records import make_records
        cfg = self.preprocess_config()
        key = cfg.to_dict()
        cmd = [cmd_text(self.records_command())]
        if self._reuse("records", key, os.path.isfile(os.path.join(self.records, "dataset.json"))):
            say(f"reusing {self.records}")
            return "reused", cmd
        summary = make_records(self.data, self.records, cfg, manifest=os.path.join(self.data, "demo_manifest.csv"),
                               overwrite=True, workers=self.o.workers)
        say(format_summary(summary))
        self.state.record("records", key)
        return "built", cmd

    def stage_all_records(self):
        """Stage 2: the Table I records, then the synthetic-CT model's (``SyntheticCTStage.build_records``)."""
        status, cmd = self.stage_records()
        sct_status, sct_cmd = self.sct.build_records()
        return ("reused" if (status, sct_status) == ("reused", "reused") else "built"), cmd + sct_cmd

    # ---- 3. training (demo_runs.TrainingStage)
    def stage_train(self):
        return TrainingStage(self)()

    def on_trained(self, name: str) -> None:
        """A training of ``runs.TRAININGS`` has ended (and exported): the synthetic-CT model's scoring starts
        at once, beside the trainings still running."""
        if name == "sct":
            self.sct.start_scoring(force=True)

    # ---- 4. SavedModels
    def stage_export(self):
        from mrgan_tf.serving.export import ExportError, export_run, resolve_version_dir
        status, commands = "present", []
        for mode in MODES:
            export_dir = os.path.join(self.runs[mode], "export")
            try:
                resolve_version_dir(export_dir, "ct2mr")
            except ExportError:  # train exports when it ends; a run stopped before that has none
                cmd = f"python -m mrgan_tf.export --run={self.runs[mode]}"
                say(f"[{mode}] {cmd}")
                commands.append(cmd)
                export_run(self.runs[mode])
                status = "exported"
            self.exports[mode] = {}
            for name in ("ct2mr", "mr2ct"):
                try:
                    self.exports[mode][name] = resolve_version_dir(export_dir, name)
                except ExportError:
                    pass
            say(f"[{mode}] " + ", ".join(f"{n}: {p}" for n, p in self.exports[mode].items()))
        self.sct.start_scoring()   # unless the training stage started it or stage 7 will be reused
        return status, commands

    # ---- 5. evaluation
    def stage_eval(self):
        from mrgan_tf.evaluation.evaluate import evaluate
        models = {m: os.path.join(self.runs[m], "export") for m in MODES}
        cmd = [cmd_text(["python", "-m", "mrgan_tf.evaluate", *[f"--model={m}={p}" for m, p in models.items()],
                          f"--dataset={self.records}", f"--out={self.eval}"])]
        key = {m: self.exports[m] for m in MODES}
        metrics_md = os.path.join(self.eval, "metrics.md")
        if self._reuse("eval", key, os.path.isfile(os.path.join(self.eval, "metrics.json"))):
            say(f"reusing {self.eval}")
            self.metrics_md = Path(metrics_md).read_text()
            return "reused", cmd
        result = evaluate(models, self.records, self.eval, progress=False)
        self.metrics_md = result["markdown"]
        say(self.metrics_md)
        self.state.record("eval", key)
        return "built", cmd

    # ---- 6. synthesis of the real Cranium CT
    def cranium_patient(self) -> tuple[str, bool]:
        """(patient id, is the real Cranium CT); falls back to the first CT-only patient."""
        with open(os.path.join(self.data, "demo_manifest.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            if r["base_subject"] == "cranium":
                return r["patient_id"], True
        ct_only = [r["patient_id"] for r in rows if r["role"] == "ct"]
        if not ct_only:
            raise DemoError(f"{self.data}: no CT-only patient to synthesize from")
        return ct_only[0], False

    def stage_synthesize(self):
        return CraniumSynthesis(self)()

    # ---- 7. loss curves + report (demo_report)
    def stage_report(self, stages: Stages):
        return stage_report(self, stages)


class CraniumSynthesis:
    """Stage 6: the MR-GAN SynMR of the real Cranium CT (or the first CT-only patient) and its PNG."""

    def __init__(self, demo: Demo):
        self.d = demo

    def __call__(self):
        from mrgan_tf.inference.outputs import OutputOptions, synthesize_file
        from mrgan_tf.inference.predictors import load_predictor
        from mrgan_tf.io.readers import find_modality_file
        pid, real = self.d.cranium_patient()
        ct = str(find_modality_file(Path(self.d.data) / pid, "ct"))
        out = os.path.join(self.d.out, SYN_NAME if real else f"{pid}_syn_mr.nii.gz")
        png = out.replace(".nii.gz", ".png")
        model = os.path.join(self.d.runs["mrgan"], "export")
        cmd = [f"python -m mrgan_tf.synthesize --model={model} --ct={ct} --out={out}"]
        self.d.syn = {"patient": pid, "real": real, "ct": ct, "out": out, "png": png}
        key = {"model": self.d.exports["mrgan"]["ct2mr"], "ct": ct}
        if self.d._reuse("synthesize", key, os.path.isfile(out) and os.path.isfile(png)):
            say(f"reusing {out}")
            return "reused", cmd
        if not real:
            say(f"WARNING: the real Cranium CT is not in {self.d.data}; using simulated CT {pid}")
        predictor = load_predictor(model, "ct2mr")
        info = synthesize_file(predictor, ct, out, options=OutputOptions(overwrite=True))   # a rebuild replaces it
        say(f"{out}: {info['slices']} slices in {info['total_s']:.1f} s (model {info['model_s']:.1f} s)")
        write_synthesis_png(ct, out, png, predictor.preprocess,
                            title=f"{pid}{' (real Cranium CT)' if real else ''}: CT | SynMR (MR-GAN)")
        say(f"wrote {png}")
        self.d.state.record("synthesize", key)
        return "built", cmd


# --------------------------------------------------------------------------- entry points


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run (or reuse) every stage; returns paths of what was built and the stage timings."""
    opts = opts.resolved()
    os.makedirs(opts.out, exist_ok=True)
    demo = Demo(opts)
    stages = Stages(8, demo.state)
    say(f"mrgan-tf demo -> {opts.out}  (steps {opts.steps}, size_scale {opts.size_scale:g}, "
         f"{opts.image_size} px at {opts.spacing_mm:g} mm{', --rebuild' if opts.rebuild else ''})")
    try:
        stages.run("Demo data", demo.stage_data)
        stages.run("Records (make_records)", demo.stage_all_records)
        stages.run("Training: " + ", ".join(TRAININGS), demo.stage_train)
        stages.run("SavedModels", demo.stage_export)
        stages.run("Evaluation", demo.stage_eval)
        stages.run("Synthesis from the Cranium CT", demo.stage_synthesize)
        stages.run("Synthetic CT in HU (scores, uncertainty, dose)", demo.sct)
        stages.run("Loss curves + report", lambda: demo.stage_report(stages))
    finally:
        demo.sct.stop_scoring()    # a stage that failed leaves no evaluation running
    report = os.path.join(opts.out, "report.md")
    say(f"\ndone in {stages.elapsed()}: {report}\nTensorBoard: tensorboard --logdir {opts.out}")
    return {"out": opts.out, "report": report, "data": demo.data, "records": demo.records, "runs": demo.runs,
            "exports": demo.exports, "eval": demo.eval, "synthesis": demo.syn, "loss_curves": demo.loss_pngs,
            "sct": {"records": demo.sct.records, "eval": demo.sct.eval, "png": demo.sct.png,
                    "per_patient": demo.sct.per_patient},
            "stages": stages.rows, "options": dataclasses.asdict(opts)}


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (its --out/--steps/--seed are not the trainer's)."""
    d = DemoOptions()
    flags.DEFINE_string("out", d.out, "Demo output folder.", flag_values=fv)
    flags.DEFINE_bool("rebuild", False, "Redo every stage instead of reusing what is built.", flag_values=fv)
    flags.DEFINE_integer("steps", None, "Training iterations per mode (default: configs/demo.cfg's --steps).",
                         flag_values=fv)
    flags.DEFINE_float("size_scale", d.size_scale, "Demo data resolution: voxel size 2 mm / size_scale; "
                       "also scales the slice size (128 px at 1).", flag_values=fv)
    flags.DEFINE_integer("seed", d.seed, "Seed of the demo data and of training.", flag_values=fv)
    flags.DEFINE_string("config", None, "Train flagfile (default configs/demo.cfg).", flag_values=fv)
    flags.DEFINE_string("sct_config", None, "The synthetic-CT stage's train flagfile (default configs/demo_sct.cfg).",
                        flag_values=fv)
    flags.DEFINE_integer("dose_patients", d.dose_patients, "Dose check of the synthetic CT (photon and proton "
                         "plans, 5 mm grid) on this many test heads; 0: none.", flag_values=fv)
    flags.DEFINE_bool("sct_register", d.sct_register, "Register each MR to its CT in the synthetic-CT stage's "
                      "records (make_records --register).", flag_values=fv)
    flags.DEFINE_integer("image_size", None, "Slice size (default 128 x size_scale).", flag_values=fv)
    flags.DEFINE_float("spacing_mm", None, "Records voxel size (default: the demo data's).", flag_values=fv)
    flags.DEFINE_bool("register", d.register, "Register each MR to its CT in make_records: rigid, by mutual "
                      "information (make_records --register; slower).", flag_values=fv)
    flags.DEFINE_multi_string("train_flag", [], "Extra train flag, e.g. --train_flag=--ngf=8 (repeatable).",
                              flag_values=fv)
    flags.DEFINE_integer("jobs", None, "Trainings run at once, the cores shared between them (default: 2 where "
                         "there are 2 cores or more).", flag_values=fv)
    flags.DEFINE_integer("workers", d.workers, "make_records worker processes.", flag_values=fv)


def main(argv):
    fv = flags.FLAGS
    with cli.user_errors("demo"):
        run_demo(DemoOptions(out=fv.out, rebuild=fv.rebuild, steps=fv.steps, size_scale=fv.size_scale,
                             seed=fv.seed, config=fv.config, sct_config=fv.sct_config,
                             sct_register=fv.sct_register, dose_patients=fv.dose_patients, image_size=fv.image_size, spacing_mm=fv.spacing_mm,
                             register=fv.register, train_flags=tuple(fv.train_flag), jobs=fv.jobs,
                             workers=fv.workers))
    return 0


run = cli.entry_point(define_flags, main, "demo")
