"""Shared fixtures: one tiny records dir and one traced tiny model per session.

Tracing Algorithm 1's step costs tens of seconds even for a tiny network, so
tests share models instead of building their own.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY = dict(image_size=32, ngf=4, n_blocks=1, ndf_scale=0.125)
TINY_FLAGS = ["--ngf=4", "--n_blocks=1", "--ndf_scale=0.125"]


def train_configs(argv):
    """The (model, train) configs of a ``python -m mrgan_tf.train`` command line, without global flags."""
    from absl import flags

    from mrgan_tf.training import train
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["train", *argv])
    return train.configs_from_flags(fv)


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory):
    from records_factory import write_tiny_records
    return write_tiny_records(str(tmp_path_factory.mktemp("records")), size=32)


@pytest.fixture(scope="session")
def tiny_model_factory():
    """Builds (and caches) a compiled tiny MRGAN per (mode, options)."""
    from mrgan_tf.modeling.fast import shared_update
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig, make_optimizers
    cache = {}

    def make(mode="mrgan", **overrides):
        key = (mode, tuple(sorted(overrides.items())))
        if key not in cache:
            cfg = MRGANConfig(mode=mode, **{**TINY, **overrides})
            model = MRGAN(cfg)
            model.compile(make_optimizers(cfg))
            shared_update.attach(model)
            cache[key] = model
        return cache[key]

    return make


def rounding_tolerance(fn, x, network) -> float:
    """How far two float32 evaluations of ``fn`` at ``x`` (other kernels, batch sizes or CPUs) may differ.

    Derived from the computation, not from one machine: the output's response to a relative
    input perturbation of float32's epsilon (the computation's condition, measured), for each
    of ``network``'s convolutions (each rounds once more), each rounding like a sum of its
    fan-in n terms, ~sqrt(n) epsilons in any order of accumulation (the usual statistical bound).
    """
    import keras
    convs = [layer for layer in network._flatten_layers(include_self=False)
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    fan_in = max(int(np.prod(layer.kernel.shape[:-1])) for layer in convs)
    eps = float(np.finfo(np.float32).eps)
    x = np.asarray(x, np.float32)
    dx = (x * eps * np.random.default_rng(0).choice([-1.0, 1.0], x.shape)).astype(np.float32)
    moved = np.abs(np.asarray(fn(x + dx)) - np.asarray(fn(x))).max()
    return len(convs) * np.sqrt(fan_in) * max(float(moved), eps)


# ---------------------------------------------------------------- one tiny model, export and run per session
_CACHE: dict = {}


def tiny_model():
    """One tiny MR-GAN with random weights, for every export/synthesize/evaluate test."""
    if "model" not in _CACHE:
        from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig
        _CACHE["model"] = MRGAN(MRGANConfig(image_size=32, ngf=4, n_blocks=1, ndf_scale=0.125, seed=1))
    return _CACHE["model"]


def tiny_export(tmp_path_factory, spec) -> str:
    """An export dir holding ct2mr/1 and mr2ct/1 of ``tiny_model`` for ``spec``'s preprocessing (one per spec)."""
    key = ("export", json.dumps(getattr(spec, "preprocess", spec).to_dict(), sort_keys=True))
    if key not in _CACHE:
        from mrgan_tf.serving import export
        out = str(tmp_path_factory.mktemp("export"))
        export.export_model(tiny_model(), spec, out)
        _CACHE[key] = out
    return _CACHE[key]


def tiny_run(tmp_path_factory, records_dir: str) -> str:
    """A run dir (run.json + checkpoint) of ``tiny_model``, as train.py writes it."""
    if "run" not in _CACHE:
        from mrgan_tf.training import checkpoints
        run_dir = str(tmp_path_factory.mktemp("run"))
        model = tiny_model()
        checkpoints.save_run_config(run_dir, model.config, records_dir)
        checkpoints.manager_for(model, run_dir).save()
        _CACHE["run"] = run_dir
    return _CACHE["run"]


# ---------------------------------------------------------------- synthetic volumes
def head_ct(shape, seed=0) -> np.ndarray:
    """Air around an ellipsoid of soft tissue with a brighter rim."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grid))
    ct = np.where(r < 0.8, 30.0, -1000.0) + np.where((r > 0.65) & (r < 0.8), 900.0, 0.0)
    return (ct + np.random.default_rng(seed).normal(0, 5, shape)).astype(np.float32)


def oblique_lps_affine() -> np.ndarray:
    """A rotated grid with flipped first two axes (as DICOM/ITK LPS data read into RAS+)."""
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-0.9, -1.1, 1.5])
    a[:3, 3] = [12.0, -30.0, 7.5]
    return a


def oblique_lps_grid() -> np.ndarray:
    """Rotated (17 and -8 degrees), anisotropic and translated: a scanner's oblique series, in its own axes."""
    a, b = np.deg2rad(17.0), np.deg2rad(-8.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = [-91.5, 12.25, -40.0]
    return aff


def oblique_affine() -> np.ndarray:
    """``oblique_lps_grid`` rounded to float32 because NIfTI stores float32."""
    return oblique_lps_grid().astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------- patients on disk
HEAD_SHAPE = (40, 48, 30)
HEAD_SPACING = 2.0


def records_config():
    """The preprocessing the make_records tests use: 2 mm, 64 px."""
    from mrgan_tf import preprocess as pp
    return pp.PreprocessConfig(spacing_mm=HEAD_SPACING, image_size=64)


def head_pair(shift=(0.0, 0.0, 0.0), seed=0):
    """CT (HU) and MR volumes of an ellipsoid head on a 2 mm grid centred on the origin."""
    from mrgan_tf.io.volumes import Volume
    affine = np.diag([HEAD_SPACING] * 3 + [1.0])
    affine[:3, 3] = -(np.array(HEAD_SHAPE) - 1) / 2 * HEAD_SPACING
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in HEAD_SHAPE], indexing="ij"), -1)
    p = idx * HEAD_SPACING + affine[:3, 3] - np.asarray(shift)
    r_head = np.sqrt(((p / [32, 40, 24]) ** 2).sum(-1))
    r_brain = np.sqrt(((p / [26, 34, 19]) ** 2).sum(-1))
    noise = np.random.default_rng(seed).normal(0, 5, HEAD_SHAPE)
    ct = np.where(r_head < 1, 1000.0, -1000.0) + np.where(r_brain < 1, -960.0, 0.0) + noise
    mr = np.where(r_head < 1, 300.0, 0.0) + np.where(r_brain < 1, 400.0, 0.0) + noise + 10 * p[..., 0]
    return Volume(ct.astype(np.float32), affine), Volume(mr.astype(np.float32), affine)


def add_patient(root, pid, modalities=("ct", "mr"), seed=0, suffix=".nii.gz"):
    """A patient folder ``root/pid`` holding ``head_pair``'s volumes as ``<modality><suffix>``."""
    from pathlib import Path

    from mrgan_tf.io.writers import write_volume
    folder = Path(root) / pid
    folder.mkdir(parents=True)
    ct, mr = head_pair(seed=seed)
    for name in modalities:
        write_volume({"ct": ct, "mr": mr}[name], folder / f"{name}{suffix}", modality=name.upper(), dtype="float32")
    return folder


# ---------------------------------------------------------------- DICOM test data and validation
DS_TOL = 1e-6   # mm: what a 16-character Decimal String keeps of a position


def copy_series(src: str, dst):
    """Copy one of pydicom's test folders so the test owns it (pydicom's folders hold other files)."""
    import shutil
    from pathlib import Path

    import pydicom.data
    tests = Path(pydicom.data.get_testdata_file("DICOMDIR")).parent
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in (tests / src).iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def dciodvfy(path) -> list[str]:
    """dciodvfy's output lines for one file."""
    import subprocess

    from orthanc_server import require_tool
    run = subprocess.run([require_tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, text=True,
                         timeout=60)
    return (run.stdout + run.stderr).splitlines()


def dciodvfy_errors(folder) -> dict[str, list[str]]:
    """dciodvfy's Error lines for every file of ``folder`` (warnings are allowed; see docs/USAGE.md)."""
    out = {}
    for f in sorted(folder.iterdir()):
        errors = [ln for ln in dciodvfy(f) if ln.startswith("Error")]
        if errors:
            out[f.name] = errors
    return out


# ---------------------------------------------------------------- a test double of a model
def identity_predictor(name: str, cfg):
    """A test double of a generator: output = input, so the output units are exactly the mapping's; its
    model record is made up (no SavedModel behind it)."""
    from mrgan_tf.inference import predictors

    class IdentityPredictor(predictors.Predictor):
        def model_record(self) -> dict:
            return {"path": self.source, "kind": "test double", "direction": self.name, "version": 1}

    return IdentityPredictor(name, cfg, f"identity-{name}", lambda x: x)
