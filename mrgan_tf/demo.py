"""The one-command demo: data -> records -> three trainings -> SavedModels -> evaluation -> synthesis -> report.

    python -m mrgan_tf.demo [--out runs/demo] [--rebuild] [--steps N] [--size_scale 1] [--seed 0]

Stages (each reused when its output exists and was built with the same settings;
``--rebuild`` redoes everything; a stage that is redone makes every later one redo):

1. ``<out>/data``: the offline demo set (``demo_data.build_demo_dataset``);
2. ``<out>/records``: ``make_records`` with the set's own train/test manifest;
3. ``<out>/{mrgan,paired,unpaired}``: ``python -m mrgan_tf.train --flagfile=configs/demo.cfg``,
   one process per mode (each trace costs ~45 s; processes keep TF state apart).
   A run already at ``--steps`` is not started again; a shorter one resumes;
4. SavedModels in ``<run>/export`` (train writes them; re-exported here if missing);
5. ``<out>/eval``: the three models side by side on the paired test patients;
6. ``<out>/cranium_syn_mr.nii.gz`` + PNG: the MR-GAN model applied to the real Cranium CT;
7. ``<out>/report.md``: commands, times, the Table I-style comparison, figures, paths.

``run_demo(DemoOptions(...))`` is the importable entry point (tests use it with
tiny networks). Flags are defined only when this module is the program, so its
``--out``/``--steps``/``--seed`` never collide with mrgan_tf.train's.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import app, flags

MODES = ("mrgan", "paired", "unpaired")
REPO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.cfg"
BASE_IMAGE_SIZE = 128          # slice size at size_scale 1 (128 px x 2 mm = 256 mm field of view)
STATE_NAME = "demo_state.json"
SYN_NAME = "cranium_syn_mr.nii.gz"
REUSED = ("reused", "present")  # stage statuses that did no work
PROGRESS_EVERY_S = 15.0        # how often a training's history.csv is polled for a progress line
# Our own modules' absl log lines are shown; TF's INFO chatter goes only to the log files.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.]+):\d+\]")
_OUR_FILES = {f"{m}.py" for m in ("train", "make_records", "export", "synthesize", "evaluate", "demo_data",
                                  "callbacks", "checkpoints", "data", "model", "demo")}
_NOISE = ("oneDNN custom operations", "All log messages before absl::InitializeLog", "INFO:tensorflow:",
          "cpu_feature_guard", "To enable the following instructions", "rebuild TensorFlow with",
          "remapper failed",                                     # harmless grappler message
          "`shuffle=True` was passed", "self.data_adapter = data_adapters")  # Keras fit() on a tf.data set


class DemoError(RuntimeError):
    """A demo stage failed; the message names the stage and where its log is."""


@dataclasses.dataclass
class DemoOptions:
    """Everything that decides what the demo builds (the CLI flags map 1:1 onto these)."""

    out: str = "runs/demo"
    rebuild: bool = False
    steps: int | None = None              # None: the flagfile's --steps
    size_scale: float = 1.0               # demo data voxel size = 2 mm / size_scale
    seed: int = 0
    config: str | None = None             # train flagfile (default configs/demo.cfg)
    image_size: int | None = None         # None: 128 * size_scale (a multiple of 4)
    spacing_mm: float | None = None       # None: the demo data's own voxel size
    register: bool = False                # MI registration of MR to CT in make_records
    train_flags: tuple[str, ...] = ()     # extra train flags, after the flagfile (e.g. --ngf=4)
    jobs: int = 1                         # trainings run at once
    workers: int = 2                      # make_records worker processes

    def resolved(self) -> "DemoOptions":
        """Defaults filled in, paths absolute, values checked."""
        o = dataclasses.replace(self, out=os.path.abspath(self.out), train_flags=tuple(self.train_flags))
        if not 0.1 <= o.size_scale <= 2.0:
            raise DemoError(f"--size_scale must be in [0.1, 2], got {o.size_scale}")
        from mrgan_tf.demo_data import BASE_SPACING_MM
        if o.spacing_mm is None:
            o.spacing_mm = BASE_SPACING_MM / o.size_scale
        if o.image_size is None:
            o.image_size = max(32, 4 * round(BASE_IMAGE_SIZE * o.size_scale / 4))
        if o.image_size % 4:
            raise DemoError(f"--image_size must be a multiple of 4 (two stride-2 generator stages), got {o.image_size}")
        o.config = os.path.abspath(o.config or _default_config())
        if not os.path.isfile(o.config):
            raise DemoError(f"{o.config}: train flagfile not found")
        if o.steps is None:
            o.steps = _flagfile_int(o.config, "steps")
        if o.steps is None or o.steps < 1:
            raise DemoError(f"{o.config}: no --steps >= 1 in the flagfile and none given with --steps")
        if o.jobs < 1:
            raise DemoError(f"--jobs must be >= 1, got {o.jobs}")
        return o


def _default_config() -> str:
    """configs/demo.cfg of the source tree, else of the working directory."""
    return str(REPO_CONFIG if REPO_CONFIG.is_file() else Path("configs") / "demo.cfg")


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


def _say(msg: str) -> None:
    print(msg, flush=True)


def _worth_showing(line: str) -> bool:
    """Console filter for child output: drop TensorFlow's INFO chatter (it stays in the log file)."""
    if any(n in line for n in _NOISE):
        return False
    m = _ABSL_LINE.match(line)
    return not (m and m.group(1) == "I" and m.group(2) not in _OUR_FILES)


def _cmd_text(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd).replace(shlex.quote(sys.executable), "python")


class _Child:
    """A subprocess whose merged output goes to a log file and, filtered and prefixed, to the console."""

    def __init__(self, name: str, cmd: list[str], log_path: str):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   PYTHONUNBUFFERED="1")
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, env=env)
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        for line in self.proc.stdout:
            self._log.write(line)
            if _worth_showing(line):
                print(f"  [{self.name}] {line.rstrip()}", flush=True)

    def finish(self) -> int:
        rc = self.proc.wait()
        self._pump.join()
        self._log.close()
        return rc

    def tail(self, n: int = 20) -> str:
        with open(self.log_path) as f:
            return "".join(f.readlines()[-n:])


def _history_progress(run_dir: str) -> tuple[int, float] | None:
    """(last iteration, iterations/s) from a run's history.csv, or None before its first row."""
    path = os.path.join(run_dir, "history.csv")
    try:
        with open(path) as f:
            rows = list(csv.reader(f))
    except OSError:
        return None
    if len(rows) < 2 or len(rows[-1]) != len(rows[0]):
        return None
    try:
        return int(rows[-1][0]), float(rows[-1][-1])
    except ValueError:
        return None


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

    # ---- helpers
    def _reuse(self, stage: str, key: Any, exists: bool) -> bool:
        """True when ``stage`` can be reused; otherwise forgets it and marks later stages dirty."""
        if not self.dirty and exists and self.state.matches(stage, key):
            return True
        self.state.forget(stage)
        self.dirty = True
        return False

    def preprocess_config(self):
        from mrgan_tf.preprocess import PreprocessConfig
        return PreprocessConfig(spacing_mm=self.o.spacing_mm, image_size=self.o.image_size, register=self.o.register)

    def records_command(self) -> list[str]:
        cmd = ["python", "-m", "mrgan_tf.make_records", f"--root={self.data}", f"--out={self.records}",
               f"--manifest={os.path.join(self.data, 'demo_manifest.csv')}", f"--spacing_mm={self.o.spacing_mm:g}",
               f"--image_size={self.o.image_size}", f"--workers={self.o.workers}", "--overwrite"]
        return cmd + (["--register"] if self.o.register else [])

    def train_command(self, mode: str) -> list[str]:
        return [sys.executable, "-m", "mrgan_tf.train", f"--flagfile={self.o.config}", f"--mode={mode}",
                f"--records={self.records}", f"--out={self.runs[mode]}", f"--steps={self.o.steps}",
                f"--seed={self.o.seed}", *self.o.train_flags]

    # ---- 1. data
    def stage_data(self):
        from mrgan_tf.demo_data import build_demo_dataset
        key = {"seed": self.o.seed, "size_scale": self.o.size_scale}
        cmd = [f"python -m mrgan_tf.demo_data --out={self.data} --seed={self.o.seed} "
               f"--size_scale={self.o.size_scale:g} --overwrite"]
        if self._reuse("data", key, os.path.isfile(os.path.join(self.data, "demo_summary.json"))):
            _say(f"reusing {self.data}")
            return "reused", cmd
        summary = build_demo_dataset(self.data, seed=self.o.seed, size_scale=self.o.size_scale, overwrite=True)
        _say(f"wrote {len(summary['patients'])} patients ({summary['total_bytes'] / 1e6:.1f} MB) at "
             f"{summary['spacing_mm']:g} mm to {self.data}")
        for w in summary["warnings"]:
            _say(f"WARNING: {w}")
        self.state.record("data", key)
        return "built", cmd

    # ---- 2. records
    def stage_records(self):
        from mrgan_tf.make_records import format_summary, make_records
        cfg = self.preprocess_config()
        key = cfg.to_dict()
        cmd = [_cmd_text(self.records_command())]
        if self._reuse("records", key, os.path.isfile(os.path.join(self.records, "dataset.json"))):
            _say(f"reusing {self.records}")
            return "reused", cmd
        summary = make_records(self.data, self.records, cfg, manifest=os.path.join(self.data, "demo_manifest.csv"),
                               overwrite=True, workers=self.o.workers)
        _say(format_summary(summary))
        self.state.record("records", key)
        return "built", cmd

    # ---- 3. training
    def _trained_iterations(self, mode: str) -> int:
        import tensorflow as tf
        path = tf.train.latest_checkpoint(os.path.join(self.runs[mode], "checkpoints"))
        return int(path.rsplit("-", 1)[1]) if path else 0

    def stage_train(self):
        # Comments and --steps are left out: a longer run resumes the same run dir.
        config = [line.strip() for line in Path(self.o.config).read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith(("#", "--steps"))]
        key = {"config": config, "train_flags": list(self.o.train_flags), "seed": self.o.seed}
        todo, commands = [], []
        for mode in MODES:
            commands.append(_cmd_text(self.train_command(mode)))
            if not self._reuse_run(mode, key):
                if os.path.isdir(self.runs[mode]):
                    _say(f"[{mode}] removing the old run (--rebuild, or its settings or inputs changed) {self.runs[mode]}")
                    shutil.rmtree(self.runs[mode])
                todo.append(mode)
                continue
            done = self._trained_iterations(mode)
            if done >= self.o.steps:
                _say(f"[{mode}] reusing {self.runs[mode]} ({done} iterations)")
                self.iterations[mode] = done
            else:
                _say(f"[{mode}] resuming {self.runs[mode]} from iteration {done}")
                todo.append(mode)
        self._train_all(todo, key)
        self.dirty = self.dirty or bool(todo)
        return ("trained " + ", ".join(todo) if todo else "reused"), commands

    def _reuse_run(self, mode: str, key: Any) -> bool:
        """Like ``_reuse`` but per run and without dirtying the other runs."""
        stage = f"train/{mode}"
        exists = os.path.isfile(os.path.join(self.runs[mode], "run.json"))
        if not self.dirty and exists and self.state.matches(stage, key):
            return True
        self.state.forget(stage)
        return False

    def _train_all(self, todo: list[str], key: Any) -> None:
        pending, running = list(todo), {}
        while pending or running:
            while pending and len(running) < self.o.jobs:
                mode = pending.pop(0)
                _say(f"[{mode}] {_cmd_text(self.train_command(mode))}")
                _say(f"[{mode}] tracing the train step first (tens of seconds), then {self.o.steps} iterations")
                self.state.record(f"train/{mode}", key)  # the settings this run dir holds, even if interrupted
                running[mode] = (_Child(mode, self.train_command(mode), os.path.join(self.logs, f"train_{mode}.log")),
                                 time.perf_counter())
            finished = self._wait_any(running)
            child, t = running.pop(finished)
            rc = child.finish()
            if rc != 0:
                for other, _ in running.values():
                    other.proc.kill()
                    other.finish()
                raise DemoError(f"training {finished} failed (exit {rc}); full log: {child.log_path}\n{child.tail()}")
            self.state.set_seconds(f"train/{finished}", time.perf_counter() - t)
            self.iterations[finished] = self._trained_iterations(finished)

    def _wait_any(self, running: dict) -> str:
        """Waits until one child ends, printing iteration progress from history.csv meanwhile."""
        next_report, last = time.perf_counter() + PROGRESS_EVERY_S, {}
        while True:
            for mode, (child, _) in running.items():
                if child.proc.poll() is not None:
                    return mode
            try:
                next(iter(running.values()))[0].proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if time.perf_counter() >= next_report:
                next_report += PROGRESS_EVERY_S
                for mode in running:
                    p = _history_progress(self.runs[mode])
                    if p and p != last.get(mode):
                        last[mode] = p
                        _say(f"  [{mode}] iteration {p[0]}/{self.o.steps} ({p[1]:.2f} it/s)")

    # ---- 4. SavedModels
    def stage_export(self):
        from mrgan_tf.export import ExportError, export_run, resolve_version_dir
        status, commands = "present", []
        for mode in MODES:
            export_dir = os.path.join(self.runs[mode], "export")
            try:
                resolve_version_dir(export_dir, "ct2mr")
            except ExportError:  # train exports when it ends; a run stopped before that has none
                cmd = f"python -m mrgan_tf.export --run={self.runs[mode]}"
                _say(f"[{mode}] {cmd}")
                commands.append(cmd)
                export_run(self.runs[mode])
                status = "exported"
            self.exports[mode] = {}
            for name in ("ct2mr", "mr2ct"):
                try:
                    self.exports[mode][name] = resolve_version_dir(export_dir, name)
                except ExportError:
                    pass
            _say(f"[{mode}] " + ", ".join(f"{n}: {p}" for n, p in self.exports[mode].items()))
        return status, commands

    # ---- 5. evaluation
    def stage_eval(self):
        from mrgan_tf.evaluate import evaluate
        models = {m: os.path.join(self.runs[m], "export") for m in MODES}
        cmd = [_cmd_text(["python", "-m", "mrgan_tf.evaluate", *[f"--model={m}={p}" for m, p in models.items()],
                          f"--dataset={self.records}", f"--out={self.eval}"])]
        key = {m: self.exports[m] for m in MODES}
        metrics_md = os.path.join(self.eval, "metrics.md")
        if self._reuse("eval", key, os.path.isfile(os.path.join(self.eval, "metrics.json"))):
            _say(f"reusing {self.eval}")
            self.metrics_md = Path(metrics_md).read_text()
            return "reused", cmd
        result = evaluate(models, self.records, self.eval, progress=False)
        self.metrics_md = result["markdown"]
        _say(self.metrics_md)
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
        from mrgan_tf.io.readers import find_modality_file
        from mrgan_tf.synthesize import load_predictor, synthesize_file
        pid, real = self.cranium_patient()
        ct = str(find_modality_file(Path(self.data) / pid, "ct"))
        out = os.path.join(self.out, SYN_NAME if real else f"{pid}_syn_mr.nii.gz")
        png = out.replace(".nii.gz", ".png")
        model = os.path.join(self.runs["mrgan"], "export")
        cmd = [f"python -m mrgan_tf.synthesize --model={model} --ct={ct} --out={out}"]
        self.syn = {"patient": pid, "real": real, "ct": ct, "out": out, "png": png}
        key = {"model": self.exports["mrgan"]["ct2mr"], "ct": ct}
        if self._reuse("synthesize", key, os.path.isfile(out) and os.path.isfile(png)):
            _say(f"reusing {out}")
            return "reused", cmd
        if not real:
            _say(f"WARNING: the real Cranium CT is not in {self.data}; using simulated CT {pid}")
        predictor = load_predictor(model, "ct2mr")
        info = synthesize_file(predictor, ct, out)
        _say(f"{out}: {info['slices']} slices in {info['total_s']:.1f} s (model {info['model_s']:.1f} s)")
        write_synthesis_png(ct, out, png, predictor.preprocess,
                            title=f"{pid}{' (real Cranium CT)' if real else ''}: CT | SynMR (MR-GAN)")
        _say(f"wrote {png}")
        self.state.record("synthesize", key)
        return "built", cmd

    # ---- loss curves + report
    def stage_report(self, stages: Stages):
        from mrgan_tf import figures
        os.makedirs(self.figures, exist_ok=True)
        for mode in MODES:
            curves = read_history(os.path.join(self.runs[mode], "history.csv"))
            if curves:
                self.loss_pngs[mode] = figures.loss_curves(os.path.join(self.figures, f"loss_{mode}.png"), curves,
                                                           title=f"{mode}: training losses", smooth=0.6)
        from mrgan_tf import tissue_contrast
        self.contrast_md = tissue_contrast.demo_markdown(self.data, os.path.join(self.runs["mrgan"], "export"))
        _say(self.contrast_md)
        path = os.path.join(self.out, "report.md")
        from tfrecords_tools.writer import atomic_write_text
        atomic_write_text(path, self.report(stages))
        _say(f"wrote {path}")
        return "built", []

    def report(self, stages: Stages) -> str:
        return report_markdown(self, stages)


def read_history(path: str) -> dict[str, tuple[list[int], list[float]]]:
    """``history.csv`` -> {loss name: (iterations, values)} (iterations_per_second left out)."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    names = [k for k in rows[0] if k not in ("iteration", "iterations_per_second")]
    steps = [int(r["iteration"]) for r in rows]
    return {n: (steps, [float(r[n]) if r[n] not in ("", None) else float("nan") for r in rows]) for n in names}


def write_synthesis_png(ct_path: str, syn_path: str, png: str, cfg, title: str, n_slices: int = 4) -> str:
    """A few axial slices, CT (the model's window) | SynMR, as DESIGN orients them."""
    import numpy as np
    from matplotlib.figure import Figure

    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.preprocess import axial_image, to_canonical, window_ct

    ct, syn = to_canonical(read_volume(ct_path)), to_canonical(read_volume(syn_path))
    if ct.shape != syn.shape:
        raise DemoError(f"{syn_path}: shape {syn.shape} differs from the CT's {ct.shape}")
    body = np.flatnonzero((ct.data > cfg.body_threshold_hu).mean(axis=(0, 1)) > 0.05)
    lo, hi = (body[0], body[-1]) if body.size else (0, ct.shape[2] - 1)
    ks = np.unique(np.linspace(lo, hi, n_slices + 2)[1:-1].round().astype(int))
    sx, sy = ct.spacing[0], ct.spacing[1]
    fig = Figure(figsize=(5.0, 2.5 * len(ks) + 0.4), layout="constrained")
    axes = fig.subplots(len(ks), 2, squeeze=False)
    for row, k in zip(axes, ks):
        images = (window_ct(axial_image(ct, k), cfg.ct_window_center, cfg.ct_window_width),
                  axial_image(syn, k) / 255.0)
        for ax, img, name in zip(row, images, ("CT", "SynMR")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, aspect=sy / sx)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}, slice {k}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    from mrgan_tf.figures import save_png
    return save_png(fig, png)


def _rel(path: str, out: str) -> str:
    return os.path.relpath(path, out)


def report_markdown(demo: Demo, stages: Stages) -> str:
    o, out = demo.o, demo.out
    lines = ["# mrgan-tf demo report", "",
             f"Built by `python -m mrgan_tf.demo --out={out} --steps={o.steps} --size_scale={o.size_scale:g} "
             f"--seed={o.seed}`{' --register' if o.register else ''}"
             + (f" with train flags `{' '.join(o.train_flags)}`" if o.train_flags else "") + ".",
             "",
             "> **Demo scale: these numbers say nothing about the paper's claims.** The data are a few "
             "simulated heads (anatomy of two real MR templates, simulated CTs; see "
             f"`{_rel(os.path.join(demo.data, 'README.txt'), out)}`), the networks are narrow, "
             f"and each model trained for {o.steps} iterations instead of the paper's 300k. "
             "The comparison shows the pipeline works end to end, not which method is better.",
             "", "## What was run", "",
             f"- Preprocessing: {o.spacing_mm:g} mm voxels, {o.image_size} x {o.image_size} px slices "
             f"(field of view {o.spacing_mm * o.image_size:g} mm), CT window 40/80 HU, 8-bit records, MR-to-CT "
             f"registration {'on' if o.register else 'off (the demo MRs are misaligned by 1-3 mm / 1-3 deg on purpose; --register turns it on, at ~20 s CPU per paired patient)'}.",
             f"- Training: `{os.path.relpath(o.config)}` in "
             f"modes {', '.join(MODES)}, {o.steps} iterations each, seed {o.seed}.",
             "", "| Stage | This run | Time this run (s) | Time when built (s) |", "|---|---|---:|---:|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']:.1f} | "
              f"{'-' if r['built_seconds'] is None else format(r['built_seconds'], '.1f')} |" for r in stages.rows]
    total = sum(r["seconds"] for r in stages.rows)
    built = sum(r["built_seconds"] or 0.0 for r in stages.rows)
    lines += [f"| **total** | | **{total:.1f}** | **{built:.1f}** |", ""]
    train = {m: demo.state.seconds(f"train/{m}") for m in MODES}
    if all(v is not None for v in train.values()):
        lines += ["Training wall time per mode (includes graph tracing and the SavedModel export): "
                  + ", ".join(f"{m} {s:.0f} s" for m, s in train.items()) + ".", ""]
    lines += ["Equivalent commands:", "", "```sh"]
    lines += [c for r in stages.rows for c in r["commands"]]
    lines += ["```", "", "## Comparison on the paired test patients (Table I style)", "",
              f"From `{_rel(os.path.join(demo.eval, 'metrics.md'), out)}` "
              f"(also `metrics.csv`, `metrics.json`). Test patients: "
              f"{', '.join(_test_patients(demo.records))}.", ""]
    lines += [_demote_headings(demo.metrics_md).strip(), ""]
    lines += ["## Tissue contrast (MR-GAN SynMR vs reference MR)", "", getattr(demo, "contrast_md", "-"), ""]
    lines += ["## Figures", ""]
    eval_pngs = sorted(p for p in os.listdir(demo.eval) if p.endswith(".png"))
    lines += [f"- [{p}]({_rel(os.path.join(demo.eval, p), out)})" for p in eval_pngs]
    if "fig6.png" in eval_pngs:
        lines += ["", f"![Fig. 6 style comparison]({_rel(os.path.join(demo.eval, 'fig6.png'), out)})"]
    lines += ["", "Loss curves (from each run's `history.csv`):", ""]
    lines += [f"- {m}: [{_rel(p, out)}]({_rel(p, out)})" for m, p in demo.loss_pngs.items()]
    syn = demo.syn
    lines += ["", "## Synthesis from a whole CT volume", "",
              f"MR-GAN's ct2mr SavedModel applied to `{_rel(syn['ct'], out)}` "
              + ("(the real Cranium CT of Debian's invesalius-examples, a CT-only training patient, so it has no "
                 "reference MR)" if syn["real"] else "(a simulated CT: the real Cranium CT was not available)")
              + f": `{_rel(syn['out'], out)}` (same grid as the CT; 0-255 scale).", "",
              f"![CT | SynMR]({_rel(syn['png'], out)})", "", "## SavedModels (TF Serving layout)", "",
              "| Mode | ct2mr | mr2ct | iterations |", "|---|---|---|---:|"]
    for m in MODES:
        e = demo.exports.get(m, {})
        lines.append(f"| {m} | `{_rel(e['ct2mr'], out) if 'ct2mr' in e else '-'}` | "
                     f"`{_rel(e['mr2ct'], out) if 'mr2ct' in e else '-'}` | {demo.iterations.get(m, '?')} |")
    lines += ["", "The paired baseline trains only CT -> MR, so it has no mr2ct model.", "",
              "## Logs", "", f"- TensorBoard: `tensorboard --logdir {out}`",
              f"- Training console logs: `{_rel(demo.logs, out)}/train_<mode>.log`; checkpoints in "
              "`<mode>/checkpoints/`.", ""]
    return "\n".join(lines)


def _demote_headings(md: str) -> str:
    """Nest metrics.md's headings under the report's section."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", md, flags=re.M)


def _test_patients(records: str) -> list[str]:
    with open(os.path.join(records, "dataset.json")) as f:
        return list(json.load(f)["split"]["test"])


# --------------------------------------------------------------------------- entry points


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run (or reuse) every stage; returns paths of what was built and the stage timings."""
    opts = opts.resolved()
    os.makedirs(opts.out, exist_ok=True)
    demo = Demo(opts)
    stages = Stages(7, demo.state)
    _say(f"mrgan-tf demo -> {opts.out}  (steps {opts.steps}, size_scale {opts.size_scale:g}, "
         f"{opts.image_size} px at {opts.spacing_mm:g} mm{', --rebuild' if opts.rebuild else ''})")
    stages.run("Demo data", demo.stage_data)
    stages.run("Records (make_records)", demo.stage_records)
    stages.run("Training: " + ", ".join(MODES), demo.stage_train)
    stages.run("SavedModels", demo.stage_export)
    stages.run("Evaluation", demo.stage_eval)
    stages.run("Synthesis from the Cranium CT", demo.stage_synthesize)
    stages.run("Loss curves + report", lambda: demo.stage_report(stages))
    report = os.path.join(opts.out, "report.md")
    _say(f"\ndone in {stages.elapsed()}: {report}\nTensorBoard: tensorboard --logdir {opts.out}")
    return {"out": opts.out, "report": report, "data": demo.data, "records": demo.records, "runs": demo.runs,
            "exports": demo.exports, "eval": demo.eval, "synthesis": demo.syn, "loss_curves": demo.loss_pngs,
            "stages": stages.rows, "options": dataclasses.asdict(opts)}


FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Only when run as a program: mrgan_tf.train (imported in tests) defines --out/--steps/--seed too."""
    d = DemoOptions()
    flags.DEFINE_string("out", d.out, "Demo output folder.")
    flags.DEFINE_bool("rebuild", False, "Redo every stage instead of reusing what is built.")
    flags.DEFINE_integer("steps", None, "Training iterations per mode (default: configs/demo.cfg's --steps).")
    flags.DEFINE_float("size_scale", d.size_scale, "Demo data resolution: voxel size 2 mm / size_scale; "
                       "also scales the slice size (128 px at 1).")
    flags.DEFINE_integer("seed", d.seed, "Seed of the demo data and of training.")
    flags.DEFINE_string("config", None, "Train flagfile (default configs/demo.cfg).")
    flags.DEFINE_integer("image_size", None, "Slice size (default 128 x size_scale).")
    flags.DEFINE_float("spacing_mm", None, "Records voxel size (default: the demo data's).")
    flags.DEFINE_bool("register", d.register, "Register each MR to its CT in make_records (slower).")
    flags.DEFINE_multi_string("train_flag", [], "Extra train flag, e.g. --train_flag=--ngf=8 (repeatable).")
    flags.DEFINE_integer("jobs", d.jobs, "Trainings run at once.")
    flags.DEFINE_integer("workers", d.workers, "make_records worker processes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported, below
    opts = DemoOptions(out=FLAGS.out, rebuild=FLAGS.rebuild, steps=FLAGS.steps, size_scale=FLAGS.size_scale,
                       seed=FLAGS.seed, config=FLAGS.config, image_size=FLAGS.image_size,
                       spacing_mm=FLAGS.spacing_mm, register=FLAGS.register, train_flags=tuple(FLAGS.train_flag),
                       jobs=FLAGS.jobs, workers=FLAGS.workers)
    from mrgan_tf.demo_data import DemoDataError
    from mrgan_tf.evaluate import EvaluationError
    from mrgan_tf.export import ExportError
    from mrgan_tf.io.volumes import VolumeError
    from mrgan_tf.make_records import MakeRecordsError
    from mrgan_tf.synthesize import SynthesisError
    try:
        run_demo(opts)
    except (DemoError, DemoDataError, MakeRecordsError, ExportError, EvaluationError, SynthesisError,
            VolumeError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
