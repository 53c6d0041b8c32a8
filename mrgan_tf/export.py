"""SavedModels for TF Serving: trained generators with their preprocessing in the graph.

``export_model`` writes each trained generator as a TF Serving model,
``<export_dir>/ct2mr/<version>/`` (SynMR) and ``<export_dir>/mr2ct/<version>/``
(SynCT). Versions count upward and are never overwritten: a version is written
under a hidden temporary name (TF Serving only loads numeric folders) and
renamed into place when complete.

Signatures (method ``tensorflow/serving/predict``; docs/SERVING.md has examples):

* ``serving_default``: physical units in, physical units out. The input (``ct``
  in HU, or raw ``mr`` intensities) is ``[N, H, W]`` or ``[N, H, W, 1]`` for any
  H, W (one signature of unknown rank, checked in the graph); outputs have the
  input's shape. Inside: window / normalise, quantise to the records' bits, fit
  to S x S (the dataset's pad/crop or resize), generator, back to H x W.
  ct2mr outputs ``mr`` (0..1 training scale) and ``mr_255`` (the paper's 0-255);
  mr2ct outputs ``ct_hu`` (HU over the CT interval the records stored: the
  paper's window, or a full range such as [-1024, 3000] when the dataset was
  made with ``--ct_range``), ``ct`` (0..1) and the ``mr_range`` used. MR has no absolute
  scale, so mr2ct normalises each request by percentiles of the request's
  non-background pixels (values above the request's minimum); send a whole
  volume per request, or use ``with_mr_range`` to pass (lo, hi) yourself.
* ``normalised``: ``[N, S, S, 1]`` in [-1, 1] -> [-1, 1], the bare generator.
* ``preprocessing_parameters``: no inputs; returns the preprocessing constants
  (also stored as ``assets/preprocess.json``), so ``saved_model_cli show --all``
  documents them.

Pixels the model never saw (cropped away by a "pad" fit) come back as 0 on the
0..1 scale (``mr`` 0; ``ct_hu`` = the lower edge of the stored CT interval).

CLI: ``python -m mrgan_tf.export --run=RUN_DIR [--checkpoint=PATH] [--export_dir=DIR]``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import sys
import tempfile
from typing import Any

from absl import app, flags

from mrgan_tf.preprocess import PreprocessConfig

# Generator direction (model.trained_directions) -> TF Serving model name.
SERVING_NAMES = {"mr": "ct2mr", "ct": "mr2ct"}
DIRECTIONS = {v: k for k, v in SERVING_NAMES.items()}
PREPROCESS_ASSET = "preprocess.json"
ASSET_FORMAT = 1
TMP_PREFIX = ".tmp-"


class ExportError(ValueError):
    """Bad export request or export folder; the message names the path."""


# --------------------------------------------------------------------------- graph helpers


def _place_tf(x, row, col, out_h, out_w, fill):
    """Put [N, h, w, 1] ``x`` with its top-left at (row, col) on a ``fill`` canvas of out_h x out_w.

    TF twin of ``preprocess._paste`` (negative offsets crop).
    """
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    pads = [[0, 0], [tf.maximum(0, row), tf.maximum(0, out_h - h - row)],
            [tf.maximum(0, col), tf.maximum(0, out_w - w - col)], [0, 0]]
    padded = tf.pad(x, pads, constant_values=fill)
    r0, c0 = tf.maximum(0, -row), tf.maximum(0, -col)
    return padded[:, r0:r0 + out_h, c0:c0 + out_w, :]


def _scaled_hw(h, w, size: int, mode: str):
    """(scaled h, scaled w) as ``Placement.scaled_shape`` computes them (round half to even, >= 1)."""
    import tensorflow as tf

    if mode == "pad":
        return h, w
    scale = size / tf.cast(tf.maximum(h, w), tf.float64)
    sh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32))
    sw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32))
    return sh, sw


def fit_tf(x, size: int, mode: str):
    """TF twin of ``preprocess.fit_to_size`` for [N, H, W, 1] on the 0..1 scale (padding 0).

    "pad" is exact; "resize" uses tf.image's antialiased bilinear resize, which
    differs from the numpy path by interpolation details only.
    """
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    sh, sw = _scaled_hw(h, w, size, mode)
    if mode == "resize":
        x = tf.image.resize(x, tf.stack([sh, sw]), method="bilinear", antialias=True)
    return tf.ensure_shape(_place_tf(x, (size - sh) // 2, (size - sw) // 2, size, size, 0.0),
                           [None, size, size, 1])


def unfit_tf(y, h, w, size: int, mode: str, fill: float = 0.0):
    """TF twin of ``preprocess.unfit``: [N, S, S, 1] back to [N, h, w, 1]."""
    import tensorflow as tf

    sh, sw = _scaled_hw(h, w, size, mode)
    region = _place_tf(y, -((size - sh) // 2), -((size - sw) // 2), sh, sw, fill)
    if mode == "resize":
        region = tf.image.resize(region, tf.stack([h, w]), method="bilinear", antialias=True)
    return region


def _as_nhw1(x, name: str):
    """Accept [N, H, W] or [N, H, W, 1]; return the [N, H, W, 1] view and the input's shape."""
    import tensorflow as tf

    shape = tf.shape(x)
    rank = tf.rank(x)
    ok = tf.logical_or(tf.equal(rank, 3), tf.logical_and(tf.equal(rank, 4), tf.equal(shape[-1], 1)))
    with tf.control_dependencies([tf.debugging.Assert(
            ok, [f"input '{name}' must be [N, H, W] or [N, H, W, 1]; got shape", shape])]):
        x = tf.reshape(x, tf.concat([shape[:3], [1]], 0))
    return x, shape



def _percentile_tf(values, p: float):
    """numpy.percentile (linear interpolation) of a 1-D tensor."""
    import tensorflow as tf

    v = tf.sort(values)
    pos = p / 100.0 * tf.cast(tf.size(v) - 1, tf.float32)
    i0 = tf.cast(tf.floor(pos), tf.int32)
    i1 = tf.minimum(i0 + 1, tf.size(v) - 1)
    frac = pos - tf.floor(pos)
    return tf.gather(v, i0) * (1.0 - frac) + tf.gather(v, i1) * frac


def request_mr_range(mr, percentiles):
    """(lo, hi) of a request: percentiles of the values above the request's minimum (all if none)."""
    import tensorflow as tf

    flat = tf.reshape(tf.cast(mr, tf.float32), [-1])
    above = tf.boolean_mask(flat, flat > tf.reduce_min(flat))
    values = tf.cond(tf.size(above) > 0, lambda: above, lambda: flat)
    lo = _percentile_tf(values, percentiles[0])
    hi = _percentile_tf(values, percentiles[1])
    hi = tf.where(hi > lo, hi, lo + 1.0)  # constant request: unit range, as preprocess.mr_range
    return tf.stack([lo, hi])


# --------------------------------------------------------------------------- serving module


def _serving_module(generator, direction: str, cfg: PreprocessConfig, asset_path: str):
    """A tf.Module holding the generator, the preprocessing asset and the signature functions."""
    import tensorflow as tf

    from mrgan_tf.intensity import ct_from_unit_tf, ct_to_unit_tf, from_model_range, quantised_tf, to_model_range

    s, mode, bits = cfg.image_size, cfg.fit, cfg.bits
    module = tf.Module()
    # Track the tf.Variables under the Keras variables, not the Keras model: only then does
    # the TF1-style loader (TF Serving, saved_model_cli run) restore them.
    module.generator_variables = [v.value for v in generator.variables]
    module.preprocess_asset = tf.saved_model.Asset(asset_path)
    params = {
        "direction": tf.constant(SERVING_NAMES[direction]),
        "image_size": tf.constant(s, tf.int32),
        "fit": tf.constant(mode),
        "bits": tf.constant(bits, tf.int32),
        "spacing_mm": tf.constant(cfg.spacing_mm, tf.float32),
        "ct_window_center": tf.constant(cfg.ct_window_center, tf.float32),
        "ct_window_width": tf.constant(cfg.ct_window_width, tf.float32),
        "ct_hu_range": tf.constant(cfg.ct_hu_range, tf.float32),
        "mr_percentiles": tf.constant(cfg.mr_percentiles, tf.float32),
        "preprocess_json": tf.constant(json.dumps(cfg.to_dict(), sort_keys=True)),
    }

    def generate01(q01_nhw1):
        """0..1 input at any H, W -> 0..1 output at the same H, W."""
        h, w = tf.shape(q01_nhw1)[1], tf.shape(q01_nhw1)[2]
        x = to_model_range(fit_tf(quantised_tf(q01_nhw1, bits), s, mode))
        y = from_model_range(tf.cast(generator(x, training=False), tf.float32))
        return unfit_tf(y, h, w, s, mode, fill=0.0)

    @tf.function(input_signature=[])
    def preprocessing_parameters():
        return dict(params)

    if direction == "mr":
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="ct")])
        def serving_default(ct):
            x, shape = _as_nhw1(ct, "ct")
            q01 = generate01(ct_to_unit_tf(x, cfg))
            mr = tf.reshape(q01, shape)
            return {"mr": mr, "mr_255": mr * 255.0}

        @tf.function(input_signature=[tf.TensorSpec([None, s, s, 1], tf.float32, name="ct")])
        def normalised(ct):
            return {"mr": tf.cast(generator(ct, training=False), tf.float32)}

        module.signature_fns = {"serving_default": serving_default, "normalised": normalised}
    else:
        def mr2ct(mr, lo_hi):
            x, shape = _as_nhw1(mr, "mr")
            q01 = tf.clip_by_value((x - lo_hi[0]) / (lo_hi[1] - lo_hi[0]), 0.0, 1.0)
            ct = tf.reshape(generate01(q01), shape)
            return {"ct": ct, "ct_hu": ct_from_unit_tf(ct, cfg),
                    "mr_range": lo_hi}

        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="mr")])
        def serving_default(mr):
            return mr2ct(mr, request_mr_range(mr, cfg.mr_percentiles))

        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="mr"),
                                      tf.TensorSpec([2], tf.float32, name="mr_range")])
        def with_mr_range(mr, mr_range):
            return mr2ct(mr, mr_range)

        @tf.function(input_signature=[tf.TensorSpec([None, s, s, 1], tf.float32, name="mr")])
        def normalised(mr):
            return {"ct": tf.cast(generator(mr, training=False), tf.float32)}

        module.signature_fns = {"serving_default": serving_default, "with_mr_range": with_mr_range,
                                "normalised": normalised}
    module.signature_fns["preprocessing_parameters"] = preprocessing_parameters
    return module


# --------------------------------------------------------------------------- versions


def existing_versions(name_dir: str) -> list[int]:
    """Numeric version folders of one served model (what TF Serving would load)."""
    if not os.path.isdir(name_dir):
        return []
    return sorted(int(n) for n in os.listdir(name_dir) if n.isdigit() and os.path.isdir(os.path.join(name_dir, n)))


def _asset_doc(direction: str, cfg: PreprocessConfig, model_config: dict | None) -> dict[str, Any]:
    return {"format": ASSET_FORMAT, "name": SERVING_NAMES[direction], "direction": SERVING_NAMES[direction],
            "preprocess": cfg.to_dict(), "model": model_config or {}}


def export_generator(generator, direction: str, cfg: PreprocessConfig, export_dir: str,
                     version: int | None = None, model_config: dict | None = None) -> str:
    """Write one generator as ``<export_dir>/<ct2mr|mr2ct>/<version>``; returns the version dir."""
    import tensorflow as tf

    if direction not in SERVING_NAMES:
        raise ExportError(f"unknown generator direction {direction!r}; expected one of {sorted(SERVING_NAMES)}")
    name_dir = os.path.join(export_dir, SERVING_NAMES[direction])
    if os.path.exists(name_dir) and not os.path.isdir(name_dir):
        raise ExportError(f"{name_dir}: exists and is not a directory")
    os.makedirs(name_dir, exist_ok=True)
    if version is None:
        version = max(existing_versions(name_dir), default=0) + 1
    if int(version) < 1:
        raise ExportError(f"{name_dir}: version must be >= 1, got {version}")
    final = os.path.join(name_dir, str(int(version)))
    if os.path.exists(final):
        raise ExportError(f"{final}: version {version} already exists; versions are never overwritten "
                          "(leave --version unset to take the next free number)")
    tmp = os.path.join(name_dir, f"{TMP_PREFIX}{version}-{os.getpid()}-{secrets.token_hex(4)}")
    asset_dir = tempfile.mkdtemp(prefix="mrgan-export-")
    try:
        asset_path = os.path.join(asset_dir, PREPROCESS_ASSET)
        with open(asset_path, "w") as f:
            json.dump(_asset_doc(direction, cfg, model_config), f, indent=2, sort_keys=True)
        module = _serving_module(generator, direction, cfg, asset_path)
        tf.saved_model.save(module, tmp, signatures=module.signature_fns)
        if os.path.exists(final):  # someone else took the number meanwhile: rename would replace an empty dir
            raise ExportError(f"{final}: appeared while exporting; not overwriting it")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(asset_dir, ignore_errors=True)
    return final


def export_model(model, spec, export_dir: str, version: int | None = None) -> dict[str, str]:
    """Export ``model.trained_directions`` as TF Serving models; returns {name: version dir}.

    ``spec`` is the DatasetSpec the model was trained on (a PreprocessConfig also works):
    its preprocessing goes into the graph and into ``assets/preprocess.json``.
    """
    cfg = spec if isinstance(spec, PreprocessConfig) else spec.preprocess
    if cfg.image_size != model.config.image_size:
        raise ExportError(f"{export_dir}: dataset image_size {cfg.image_size} != model image_size "
                          f"{model.config.image_size}")
    model_config = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "augment"}
    gens = {"mr": model.syn_mr, "ct": model.syn_ct}
    return {SERVING_NAMES[d]: export_generator(gens[d], d, cfg, export_dir, version, model_config)
            for d in model.trained_directions}


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class Exported:
    """One loaded SavedModel version and the preprocessing it was trained with."""

    version_dir: str
    name: str                     # ct2mr | mr2ct
    preprocess: PreprocessConfig
    info: dict[str, Any]          # assets/preprocess.json
    loaded: Any                   # tf.saved_model.load(...) result

    @property
    def normalised(self):
        return self.loaded.signatures["normalised"]


def _is_version_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def resolve_version_dir(path: str, name: str = "ct2mr") -> str:
    """A version dir from an export dir (holding ``<name>/<v>``), a model dir (holding ``<v>``)
    or a version dir itself; the highest version wins."""
    path = os.fspath(path)
    if _is_version_dir(path):
        return path
    if not os.path.isdir(path):
        raise ExportError(f"{path}: no such directory")
    for candidate in (os.path.join(path, name), path):
        versions = [v for v in existing_versions(candidate) if _is_version_dir(os.path.join(candidate, str(v)))]
        if versions:
            return os.path.join(candidate, str(versions[-1]))
    raise ExportError(f"{path}: no SavedModel found (expected {path}/saved_model.pb, {path}/<version>/"
                      f"saved_model.pb or {path}/{name}/<version>/saved_model.pb)")


def read_info(version_dir: str) -> dict[str, Any]:
    """``assets/preprocess.json`` of a version dir, checked (its preprocess dict must be valid)."""
    asset = os.path.join(version_dir, "assets", PREPROCESS_ASSET)
    try:
        with open(asset) as f:
            info = json.load(f)
        PreprocessConfig.from_dict(info["preprocess"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{asset}: missing or unreadable preprocessing parameters ({e}); "
                          "was this SavedModel written by mrgan_tf.export?") from e
    return info


def load_exported(path: str, name: str = "ct2mr") -> Exported:
    """Load the SavedModel for ``name`` (ct2mr | mr2ct) found at ``path`` (see ``resolve_version_dir``)."""
    import tensorflow as tf

    if name not in DIRECTIONS:
        raise ExportError(f"unknown model name {name!r}; expected one of {sorted(DIRECTIONS)}")
    version_dir = resolve_version_dir(path, name)
    info = read_info(version_dir)
    if info.get("name", name) != name:
        raise ExportError(f"{version_dir}: holds a {info.get('name')} model, not {name}")
    return Exported(version_dir, name, PreprocessConfig.from_dict(info["preprocess"]), info,
                    tf.saved_model.load(version_dir))


# --------------------------------------------------------------------------- CLI

def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_string("run", None, "Training run directory (run.json + checkpoints/).", flag_values=fv)
    flags.DEFINE_string("checkpoint", None, "A checkpoint prefix inside the run (default: --export_checkpoint).",
                        flag_values=fv)
    flags.DEFINE_enum("export_checkpoint", "last", ["last", "best"], "Without --checkpoint: the last checkpoint, "
                      "or the best by validation MAE (runs trained with --val_every).", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "Where <name>/<version>/ go (default: <run>/export).", flag_values=fv)
    flags.DEFINE_integer("version", None, "Version number to write (default: highest existing + 1).",
                         flag_values=fv)


def export_run(run_dir: str, export_dir: str | None = None, checkpoint: str | None = None,
               version: int | None = None) -> dict[str, str]:
    """Restore a run's generators and export them (importable twin of the CLI)."""
    from mrgan_tf.checkpoints import load_run_config, restore_generators
    from mrgan_tf.spec import DatasetSpec

    spec = DatasetSpec.load(load_run_config(run_dir)["records"])   # fail fast, before building the model
    model, _ = restore_generators(run_dir, checkpoint)             # checks for a checkpoint before building
    return export_model(model, spec, export_dir or os.path.join(run_dir, "export"), version)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    fv = flags.FLAGS
    if not fv.run:
        raise app.UsageError("--run is required")
    import tensorflow as tf

    from mrgan_tf.spec import SpecError
    try:
        from mrgan_tf.checkpoints import resolve_checkpoint
        checkpoint = fv.checkpoint or resolve_checkpoint(fv.run, fv.export_checkpoint)
        out = export_run(fv.run, fv.export_dir, checkpoint, fv.version)
    except (ExportError, SpecError, FileNotFoundError, ValueError, tf.errors.OpError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
