"""Predictors: one direction's generator (a SavedModel or a run's checkpoint) on ordered slices.

``load_predictor(path, name)`` reads either kind of model; ``Fusion`` combines several of
one direction, and test-time augmented copies (``inference.tta``), voxel by voxel. A remote (TF Serving) predictor is ``inference.client``'s.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from mrgan_tf.errors import UserError
from mrgan_tf.inference.precision import check_precision, computing_in
from mrgan_tf.inference.tta import TTAConfig
from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.preprocess.context import volume_generator
from mrgan_tf.preprocess.intensity import from_model_range, to_model_range
from mrgan_tf.serving.export import ExportError, load_exported, read_info, resolve_version_dir
from mrgan_tf.serving.names import DIRECTIONS, SERVING_NAMES

OUTPUT_NAMES = {"ct2mr": "syn_mr.nii.gz", "mr2ct": "syn_ct.nii.gz"}
OUTPUT_STEMS = {"ct2mr": "syn_mr", "mr2ct": "syn_ct"}
INPUT_MODALITY = {"ct2mr": "ct", "mr2ct": "mr"}
OUTPUT_MODALITY = {"ct2mr": "MR", "mr2ct": "CT"}


class SynthesisError(UserError, ValueError):
    """Bad model or input for synthesis; the message names the path."""


@dataclasses.dataclass
class Predictor:
    """One direction's generator on ordered [N, S, S, 1] slices in [-1, 1], plus its preprocessing."""

    name: str                                   # ct2mr | mr2ct
    preprocess: PreprocessConfig
    source: str                                 # the SavedModel version dir or run dir
    fn: Callable[[np.ndarray], np.ndarray]      # [-1, 1] -> [-1, 1]
    precision: str = "float32"                  # what ``fn`` computes in (``inference.precision``)

    def model_record(self) -> dict:
        """What the provenance sidecar says of the model: path, version, iterations, run config, precision."""
        from mrgan_tf.inference import provenance
        return {**provenance.model_record(self.source, self.name), "precision": self.precision}

    def predict01(self, stack01: np.ndarray, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """(Z, S, S) ordered slices on 0..1 -> (Z, S, S) on 0..1, in batches (a bar counting slices when ``progress``).

        ``fn`` stacks neighbours itself (2.5D), so each batch is sent with ``2k`` slices of
        its neighbours on each side and only its own slices are kept: the result is the
        one of the whole volume at once.
        """
        from tqdm import tqdm

        stack01 = np.asarray(stack01, np.float32)
        s = self.preprocess.image_size
        if stack01.ndim != 3 or stack01.shape[1:] != (s, s):
            raise ValueError(f"expected a (Z, {s}, {s}) stack, got {stack01.shape}")
        out = np.empty_like(stack01)
        batch_size, margin = max(1, int(batch_size)), 2 * self.preprocess.context_slices
        with tqdm(total=len(stack01), desc=self.name, unit="slice", disable=not progress, leave=False) as bar:
            for i in range(0, len(stack01), batch_size):
                lo, hi = max(0, i - margin), min(len(stack01), i + batch_size + margin)
                y = np.asarray(self.fn(to_model_range(stack01[lo:hi, ..., None])), np.float32)
                out[i:i + batch_size] = from_model_range(y[i - lo:i - lo + batch_size, ..., 0])
                bar.update(min(batch_size, len(stack01) - i))
        return np.clip(out, 0.0, 1.0)


FUSIONS = {"median": np.median, "mean": np.mean}


@dataclasses.dataclass
class Fusion:
    """Several predictions of one volume combined voxel by voxel: models of one direction (one per plane,
    or several of one plane, or checkpoints of one run) times test-time augmented copies (``tta``).

    Each member synthesizes the whole volume on the input grid once per copy (a 2.5D member
    has already averaged its overlapping stack predictions; a copy is mapped back by its
    inverse first), then the volumes are fused by ``method``: median (Spadea et al.'s
    choice; robust to one plane's artefact) or mean, and their standard deviation is the
    spread. Members must share their preprocessing except the plane and the stack depth, so
    their volumes are in the same units on the same body.
    """

    members: tuple[Predictor, ...]
    method: str = "median"
    tta: TTAConfig = TTAConfig()

    def __post_init__(self):
        self.members = tuple(self.members)
        if self.method not in FUSIONS:
            raise SynthesisError(f"--fusion must be one of {', '.join(FUSIONS)}, got {self.method!r}")
        if not self.members or len(self.members) * len(self.transforms) < 2:
            raise SynthesisError(f"fusion needs at least two models, got {len(self.members)} "
                                 f"({', '.join(p.source for p in self.members) or 'none'}), and no test-time "
                                 "augmentation: give --model once per model, or --tta")
        first = self.members[0]
        want = first.preprocess.without_layout()
        for p in self.members:
            self.tta.check_canvas(p.preprocess.image_size, p.source)
        for p in self.members[1:]:
            if p.name != first.name:
                raise SynthesisError(f"{p.source}: a {p.name} model cannot be fused with the {first.name} model "
                                     f"{first.source}")
            have = p.preprocess.without_layout()
            diff = [f"{k}={have.get(k)!r} vs {want.get(k)!r}" for k in sorted(set(want) | set(have))
                    if have.get(k) != want.get(k)]
            if diff:
                raise SynthesisError(f"{p.source}: trained with other preprocessing than {first.source} "
                                     f"({'; '.join(diff)}); fused models may differ only in slice_axis and "
                                     "context_slices")

    @property
    def name(self) -> str:
        return self.members[0].name

    @property
    def source(self) -> str:
        return ", ".join(p.source for p in self.members)

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.members[0].preprocess

    @property
    def transforms(self) -> tuple:
        """The identity, then the augmented copies each member predicts."""
        return self.tta.transforms()

    @property
    def predictions(self) -> int:
        return len(self.members) * len(self.transforms)

    def describe(self) -> dict:
        """What the provenance says of how the volume was combined."""
        return {"method": self.method, "models": len(self.members), "predictions": self.predictions,
                "augmentations": [t.name for t in self.transforms],
                "planes": [m.preprocess.slice_axis for m in self.members],
                "context_slices": [m.preprocess.context_slices for m in self.members]}

    def model_record(self) -> dict:
        """The provenance of a fused volume: every member's record, the augmentations and the method."""
        records = [p.model_record() for p in self.members]
        return {"path": ", ".join(str(r.get("path")) for r in records), "kind": "fusion", "direction": self.name,
                "version": f"{self.method} of {self.predictions}", "training_iterations": None,
                "fusion": self.method, "augmentations": [t.name for t in self.transforms], "models": records}

    def predict01(self, stack01: np.ndarray, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """``Predictor.predict01`` of the fused models on one stack of slices (members of one plane only)."""
        from mrgan_tf.inference.tta import predict_augmented

        layouts = {(m.preprocess.slice_axis, m.preprocess.image_size) for m in self.members}
        if len(layouts) > 1:
            raise SynthesisError(f"{self.source}: models of different planes fuse only on the volume's grid, "
                                 "not on one stack of slices")
        outs = [o for m in self.members for o in predict_augmented(m, stack01, self.transforms, batch_size, progress)]
        return FUSIONS[self.method](np.stack(outs), axis=0).astype(np.float32)


def _is_run_dir(path: str) -> bool:
    from mrgan_tf.training.checkpoints import RUN_CONFIG

    return os.path.isfile(os.path.join(path, RUN_CONFIG))


def _keras_fn(generator, cfg: PreprocessConfig):
    """A run's generator as ordered [N, S, S, 1] slices -> [N, S, S, 1] (2.5D stacking in the graph)."""
    import tensorflow as tf

    size = cfg.image_size
    fn = tf.function(volume_generator(lambda x: generator(x, training=False), cfg.context_slices),
                     input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])
    return lambda x: fn(tf.constant(x, tf.float32)).numpy()


def _saved_model_fn(exported):
    import tensorflow as tf

    sig = exported.normalised
    arg, out = ("ct", "mr") if exported.name == "ct2mr" else ("mr", "ct")
    return lambda x: sig(**{arg: tf.constant(x, tf.float32)})[out].numpy()


def exported_models(path: str) -> tuple[str, ...]:
    """Which of ct2mr / mr2ct a SavedModel path provides (without loading them)."""
    found = []
    for name in DIRECTIONS:
        try:
            version_dir = resolve_version_dir(path, name)
        except ExportError:
            continue
        if read_info(version_dir).get("name", name) == name:
            found.append(name)
    if not found:
        resolve_version_dir(path)  # raises the "no SavedModel" error naming the path
    return tuple(found)


def _in_precision(fn, precision: str):
    """``fn`` computing in ``precision`` (float32: ``fn`` itself, the graphs as exported or traced)."""
    if precision == "float32":
        return fn

    def run(x):
        with computing_in(precision):
            return fn(x)
    return run


def load_predictors(path: str, names: tuple[str, ...] | None = None,
                    precision: str = "float32") -> dict[str, Predictor]:
    """Predictors for ``names`` (default: all the model provides) from a run dir or a SavedModel path,
    computing in ``precision`` (``inference.precision``; refused where the CPU lacks it)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SynthesisError(f"{path}: model path does not exist")

    def check(have):
        wanted = have if names is None else tuple(names)
        missing = [n for n in wanted if n not in have]
        if missing:
            raise SynthesisError(f"{path}: no {'/'.join(missing)} model here (it has: {', '.join(have) or 'none'})")
        return wanted

    check_precision(precision)
    if _is_run_dir(path):
        from mrgan_tf.training.checkpoints import restore_generators, run_preprocess

        model, run_cfg = restore_generators(path)
        wanted = check(tuple(SERVING_NAMES[d] for d in model.trained_directions))
        cfg = run_preprocess(path, run_cfg)
        gens = {"ct2mr": model.syn_mr, "mr2ct": model.syn_ct}
        return {n: Predictor(n, cfg, path, _in_precision(_keras_fn(gens[n], cfg), precision), precision) for n in wanted}
    out = {}
    for n in check(exported_models(path)):
        exported = load_exported(path, n)
        out[n] = Predictor(n, exported.preprocess, exported.version_dir,
                           _in_precision(_saved_model_fn(exported), precision), precision)
    return out


def load_predictor(path: str, name: str = "ct2mr", precision: str = "float32") -> Predictor:
    return load_predictors(path, (name,), precision)[name]
