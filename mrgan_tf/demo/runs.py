"""The demo's training subprocesses: one process per run, logs, a filtered console, progress lines.

Each training runs as ``python -m mrgan_tf.train`` in its own process (graph
tracing and TF state stay apart); its merged output goes to a log file and,
without TensorFlow's INFO chatter, to the console; progress comes from the run's
history.csv. Used by the demo and the experiment runners in bench/experiments.
"""
from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mrgan_tf.errors import UserError

MODES = ("mrgan", "paired", "unpaired")
# Every training the demo runs: the Table I modes and the synthetic-CT model, longest first, so that
# with two at once the two lanes end close together.
TRAININGS = ("sct", "mrgan", "unpaired", "paired")
PROGRESS_EVERY_S = 15.0        # how often a training's history.csv is polled for a progress line
# Our own modules' absl log lines are shown; TF's INFO chatter goes only to the log files.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.]+):\d+\]")
_OUR_FILES = {f"{m}.py" for m in ("train", "make_records", "export", "synthesize", "evaluate", "demo_data",
                                  "callbacks", "checkpoints", "data", "model", "demo")}
_NOISE = ("oneDNN custom operations", "All log messages before absl::InitializeLog", "INFO:tensorflow:",
          "cpu_feature_guard", "To enable the following instructions", "rebuild TensorFlow with",
          "remapper failed",                                     # harmless grappler message
          "`shuffle=True` was passed", "self.data_adapter = data_adapters")  # Keras fit() on a tf.data set


class DemoError(UserError, RuntimeError):
    """A demo stage failed; the message names the stage and where its log is."""


def say(msg: str) -> None:
    print(msg, flush=True)


# train's own progress lines: the pool prints one line for all its trainings (from history.csv)
_PROGRESS = re.compile(r"^iteration \d+/\d+ \(")


def worth_showing(line: str) -> bool:
    """Console filter for child output: drop TensorFlow's INFO chatter and train's progress lines (they
    stay in the log file)."""
    if any(n in line for n in _NOISE) or _PROGRESS.match(line):
        return False
    m = _ABSL_LINE.match(line)
    return not (m and m.group(1) == "I" and m.group(2) not in _OUR_FILES)


def cmd_text(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command as a shell line (``env`` as VAR=value prefixes), with this interpreter shown as python."""
    words = [f"{k}={v}" for k, v in (env or {}).items()] + list(cmd)
    return " ".join(shlex.quote(c) for c in words).replace(shlex.quote(sys.executable), "python")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, as a container or taskset limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return os.cpu_count() or 1


def shared_cores_env(lanes: int, cores: int | None = None) -> dict[str, str]:
    """Environment for one of ``lanes`` trainings that run at once: each gets its share of the cores as
    TensorFlow's intra- and inter-op threads (on 2 cores, two demo trainings side by side with one
    thread each finish 1.05-1.5x sooner than one after the other with two: docs/BENCHMARKS.md, "The
    demo on 2 cores"), and GPU memory grows on demand instead of the first taking it all.
    A thread count the user set in the environment is kept."""
    if lanes <= 1:
        return {}
    share = str(max(1, (cores or available_cores()) // lanes))
    env = {"TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": share, "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    return {k: v for k, v in env.items() if k not in os.environ}


class Child:
    """A subprocess whose merged output goes to a log file and (``echo``), filtered and prefixed, to the console."""

    def __init__(self, name: str, cmd: list[str], log_path: str, env: Mapping[str, str] | None = None,
                 echo: bool = True):
        self.name, self.cmd, self.log_path, self.echo = name, cmd, log_path, echo
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, env=env)
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        for line in self.proc.stdout:
            self._log.write(line)
            if self.echo and worth_showing(line):
                print(f"  [{self.name}] {line.rstrip()}", flush=True)

    def finish(self) -> int:
        rc = self.proc.wait()
        self._pump.join()
        self._log.close()
        return rc

    def tail(self, n: int = 20) -> str:
        with open(self.log_path) as f:
            return "".join(f.readlines()[-n:])

    def stop(self) -> None:
        """Ends the child if it still runs (a demo that fails elsewhere leaves nothing running)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


def history_progress(run_dir: str) -> tuple[int, float] | None:
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


class TrainingPool:
    """Runs the trainings of ``todo`` at most ``jobs`` at once, the cores shared between them
    (``shared_cores_env``); the first failure stops the others."""

    def __init__(self, command: Callable[[str], list[str]], run_dirs: Mapping[str, str], logs: str, jobs: int,
                 steps: int):
        self.command, self.run_dirs, self.logs, self.jobs, self.steps = command, run_dirs, logs, jobs, steps

    def env(self, n_todo: int) -> dict[str, str]:
        """The environment each of ``n_todo`` trainings runs with."""
        return shared_cores_env(min(self.jobs, n_todo))

    def run(self, todo: Sequence[str], on_start: Callable[[str], None] = lambda name: None,
            on_done: Callable[[str, float], None] = lambda name, seconds: None) -> None:
        pending, running, env = list(todo), {}, self.env(len(todo))
        while pending or running:
            while pending and len(running) < self.jobs:
                name = pending.pop(0)
                cmd = self.command(name)
                say(f"[{name}] {cmd_text(cmd, env)}")
                say(f"[{name}] tracing the train step first, then {self.steps} iterations")
                on_start(name)
                running[name] = (Child(name, cmd, os.path.join(self.logs, f"train_{name}.log"), env),
                                 time.perf_counter())
            finished = self._wait_any(running)
            child, t = running.pop(finished)
            rc = child.finish()
            if rc != 0:
                for other, _ in running.values():
                    other.stop()
                raise DemoError(f"training {finished} failed (exit {rc}); full log: {child.log_path}\n{child.tail()}")
            on_done(finished, time.perf_counter() - t)

    def _wait_any(self, running: dict) -> str:
        """Waits until one child ends, printing iteration progress from history.csv meanwhile."""
        next_report, last = time.perf_counter() + PROGRESS_EVERY_S, {}
        while True:
            for name, (child, _) in running.items():
                if child.proc.poll() is not None:
                    return name
            try:
                next(iter(running.values()))[0].proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if time.perf_counter() >= next_report:
                next_report += PROGRESS_EVERY_S
                for name in running:
                    p = history_progress(self.run_dirs[name])
                    if p and p != last.get(name):
                        last[name] = p
                        say(f"  [{name}] iteration {p[0]}/{self.steps} ({p[1]:.2f} it/s)")


class TrainingStage:
    """The demo's training stage: reuse, resume or (re)start each run of ``TRAININGS`` (the three Table I
    modes and the synthetic-CT model), then train what is left, ``--jobs`` at once."""

    def __init__(self, demo):
        self.d = demo

    def _trained_iterations(self, name: str) -> int:
        import tensorflow as tf
        path = tf.train.latest_checkpoint(os.path.join(self.d.run_dirs[name], "checkpoints"))
        return int(path.rsplit("-", 1)[1]) if path else 0

    def _key(self, name: str) -> dict:
        """What a run was trained with: its flagfiles' lines (comments and --steps left out, so that a
        longer run resumes the same run dir), the extra train flags and the seed."""
        files = [self.d.o.config] + ([self.d.o.sct_config] if name == "sct" else [])
        config = [line.strip() for f in files for line in Path(f).read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith(("#", "--steps"))]
        return {"config": config, "train_flags": list(self.d.o.train_flags), "seed": self.d.o.seed}

    def __call__(self) -> tuple[str, list[str]]:
        todo = []
        for name in TRAININGS:
            run_dir = self.d.run_dirs[name]
            if not self._reuse_run(name, self._key(name)):
                if os.path.isdir(run_dir):
                    say(f"[{name}] removing the old run (--rebuild, or its settings or inputs changed) {run_dir}")
                    shutil.rmtree(run_dir)
                todo.append(name)
                continue
            done = self._trained_iterations(name)
            if done >= self.d.o.steps:
                say(f"[{name}] reusing {run_dir} ({done} iterations)")
                self.d.iterations[name] = done
            else:
                say(f"[{name}] resuming {run_dir} from iteration {done}")
                todo.append(name)
        pool = TrainingPool(self.d.train_command, self.d.run_dirs, self.d.logs, self.d.o.jobs, self.d.o.steps)
        env = pool.env(len(todo) or len(TRAININGS))
        commands = [cmd_text(self.d.train_command(name), env) for name in TRAININGS]
        if todo:
            say(f"training {', '.join(todo)}, {min(self.d.o.jobs, len(todo))} at once"
                + (f" ({env['TF_NUM_INTRAOP_THREADS']} thread(s) each)" if "TF_NUM_INTRAOP_THREADS" in env else ""))
        pool.run(todo, lambda name: self.d.state.record(f"train/{name}", self._key(name)),  # even if interrupted
                 self._done)
        self.d.dirty = self.d.dirty or bool(todo)
        return ("trained " + ", ".join(todo) if todo else "reused"), commands

    def _done(self, name: str, seconds: float) -> None:
        self.d.state.set_seconds(f"train/{name}", seconds)
        self.d.iterations[name] = self._trained_iterations(name)
        self.d.on_trained(name)

    def _reuse_run(self, name: str, key: Any) -> bool:
        """Like ``Demo._reuse`` but per run and without dirtying the other runs."""
        stage = f"train/{name}"
        if self.d.reusable(stage, key, os.path.isfile(os.path.join(self.d.run_dirs[name], "run.json"))):
            return True
        self.d.state.forget(stage)
        return False
