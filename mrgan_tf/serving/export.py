"""SavedModels for TF Serving: trained generators with their preprocessing in the graph.

``export_model`` writes each trained generator as a TF Serving model,
``<export_dir>/ct2mr/<version>/`` (SynMR) and ``<export_dir>/mr2ct/<version>/``
(SynCT), each with ``assets.extra/tf_serving_warmup_requests``, and keeps
``models.config`` and ``batching_parameters.txt`` at the export root
(``mrgan_tf.serving.files``). Versions count upward and are never overwritten:
a version is written under a hidden temporary name (TF Serving only loads
numeric folders) and renamed into place when complete.

The graphs are ``mrgan_tf.serving.signatures.CtToMr`` / ``MrToCt``
(``tf.Module`` per direction on a shared base). Signatures (method
``tensorflow/serving/predict``; docs/SERVING.md has the table and examples):

* ``serving_default``: physical units in, physical units out. The input (``ct``
  in HU, or raw ``mr`` intensities) is ``[N, H, W]`` or ``[N, H, W, 1]`` for any
  H, W; outputs have the input's shape. ct2mr outputs ``mr`` (0..1) and
  ``mr_255`` (the paper's 0-255); mr2ct outputs ``ct_hu`` (HU over the CT
  interval the records stored: the paper's window, or a full range such as
  [-1024, 3000] with ``make_records --ct_range``), ``ct`` (0..1) and the
  (lo, hi) ``mr_range`` ([2]); ``serving_rows`` is its REST row-format twin
  (``mr_range`` once per slice, ``[N, 2]``).
* ``with_mr_range`` (mr2ct): ``mr`` plus ``mr_range`` as ``[2]`` or ``[N, 2]``.
* ``normalised``: ``[N, S, S, 1]`` in [-1, 1] -> [-1, 1], the bare generator.
* ``preprocessing_parameters``: no inputs (gRPC / Python); ``preprocessing_parameters_rows``:
  the same constants once per element of an int32 ``row`` input (REST).

Pixels the model never saw (cropped away by a "pad" fit) come back as 0 on the
0..1 scale (``mr`` 0; ``ct_hu`` = the lower edge of the stored CT interval).

CLI: ``python -m mrgan_tf.export --run=RUN_DIR [--checkpoint=PATH] [--export_dir=DIR]
[--serving_base_path=PATH]``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import tempfile
from typing import Any

from absl import app, flags, logging

from mrgan_tf import cli, requirements
from mrgan_tf.errors import UserError
from mrgan_tf.preprocess import PreprocessConfig
from mrgan_tf.serving.names import ASSET_FORMAT, DIRECTIONS, PREPROCESS_ASSET, SERVING_NAMES

TMP_PREFIX = ".tmp-"


class ExportError(UserError, ValueError):
    """Bad export request or export folder; the message names the path."""


# --------------------------------------------------------------------------- versions


def existing_versions(name_dir: str) -> list[int]:
    """Numeric version folders of one served model (what TF Serving would load)."""
    if not os.path.isdir(name_dir):
        return []
    return sorted(int(n) for n in os.listdir(name_dir) if n.isdigit() and os.path.isdir(os.path.join(name_dir, n)))


def _asset_doc(direction: str, cfg: PreprocessConfig, model_config: dict | None,
               iterations: int | None = None) -> dict[str, Any]:
    return {"format": ASSET_FORMAT, "name": SERVING_NAMES[direction], "direction": SERVING_NAMES[direction],
            "preprocess": cfg.to_dict(), "model": model_config or {}, "iterations": iterations}


def export_generator(generator, direction: str, cfg: PreprocessConfig, export_dir: str,
                     version: int | None = None, model_config: dict | None = None,
                     warmup_batch_sizes=None, iterations: int | None = None) -> str:
    """Write one generator as ``<export_dir>/<ct2mr|mr2ct>/<version>``; returns the version dir.

    Args:
        generator: the Keras generator of ``direction``.
        direction: "mr" (SynMR, served as ct2mr) or "ct" (SynCT, served as mr2ct).
        cfg: the dataset's PreprocessConfig, put into the graph and into ``assets/preprocess.json``.
        export_dir: the TF Serving base folder.
        version: the version number (default: highest existing + 1); never overwritten.
        model_config: the model's config, stored in the asset for the record.
        warmup_batch_sizes: batch sizes of the warmup requests (default: the batching's allowed sizes).
        iterations: training iterations of the weights, stored in the asset (provenance, DICOM).
    """
    tmp, final = _write_version(generator, direction, cfg, export_dir, version, model_config,
                                warmup_batch_sizes, iterations)
    _rename_into_place([(tmp, final)])
    return final


def _name_dir(export_dir: str, direction: str) -> str:
    if direction not in SERVING_NAMES:
        raise ExportError(f"unknown generator direction {direction!r}; expected one of {sorted(SERVING_NAMES)}")
    name_dir = os.path.join(export_dir, SERVING_NAMES[direction])
    if os.path.exists(name_dir) and not os.path.isdir(name_dir):
        raise ExportError(f"{name_dir}: exists and is not a directory")
    os.makedirs(name_dir, exist_ok=True)
    return name_dir


def _write_version(generator, direction, cfg, export_dir, version, model_config, warmup_batch_sizes,
                   iterations) -> tuple[str, str]:
    """The SavedModel of one direction under a temporary name; returns (temporary, final) paths."""
    import tensorflow as tf

    from mrgan_tf.serving.files import BatchingConfig, warmup_logs, write_warmup
    from mrgan_tf.serving.signatures import SERVING_MODULES

    name_dir = _name_dir(export_dir, direction)
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
            json.dump(_asset_doc(direction, cfg, model_config, iterations), f, indent=2, sort_keys=True)
        module = SERVING_MODULES[direction](generator, cfg, asset_path)
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        sizes = warmup_batch_sizes or BatchingConfig().allowed_batch_sizes
        write_warmup(tmp, warmup_logs(SERVING_NAMES[direction], module.example_inputs, sizes))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(asset_dir, ignore_errors=True)
    return tmp, final


def _rename_into_place(written: list[tuple[str, str]]) -> None:
    """Rename finished temporaries to their version folders, back to back; on failure remove the rest."""
    try:
        for tmp, final in written:
            if os.path.exists(final):  # someone else took the number meanwhile: rename would replace an empty dir
                raise ExportError(f"{final}: appeared while exporting; not overwriting it")
            os.rename(tmp, final)
    finally:
        for tmp, _ in written:
            shutil.rmtree(tmp, ignore_errors=True)


def remove_orphan_versions(export_dir: str, names) -> list[str]:
    """Versions that exist for only some of ``names`` (an export killed between its directions)
    are removed, so the served versions are always whole pairs; returns what was removed."""
    names = list(names)
    if len(names) < 2:
        return []
    have = {n: set(existing_versions(os.path.join(export_dir, n))) for n in names}
    whole = set.intersection(*have.values())
    removed = []
    for n, versions in have.items():
        for v in sorted(versions - whole):
            path = os.path.join(export_dir, n, str(v))
            shutil.rmtree(path)
            removed.append(path)
    if removed:
        logging.warning("removed half-exported versions without their partner: %s", removed)
    return removed


def export_model(model, spec, export_dir: str, version: int | None = None,
                 serving_base_path: str | None = None, batching=None) -> dict[str, str]:
    """Export ``model.trained_directions`` as TF Serving models; returns {name: version dir}.

    Then (re)writes ``models.config`` (every model in ``export_dir``) and
    ``batching_parameters.txt`` at the export root.

    Args:
        model: an MRGAN (``trained_directions``, ``syn_mr``, ``syn_ct``, ``config``).
        spec: the DatasetSpec the model was trained on (a PreprocessConfig also works):
            its preprocessing goes into the graph and into ``assets/preprocess.json``.
        export_dir: the TF Serving base folder (``<export_dir>/<name>/<version>``).
        version: the version number to write (default: the next free one of the pair).
        serving_base_path: ``export_dir`` as the server will see it (``models.config``'s
            base paths); default: ``export_dir`` made absolute.
        batching: a ``serving_files.BatchingConfig`` (default: one for slice batches); its
            allowed batch sizes are also the warmup's.
    """
    from tfrecords_tools.folder_lock import folder_lock

    with folder_lock(export_dir, "export"):   # one writer of an export folder (train --export, export)
        return _export_model(model, spec, export_dir, version, serving_base_path, batching)


def _export_model(model, spec, export_dir: str, version: int | None, serving_base_path: str | None,
                  batching) -> dict[str, str]:
    from mrgan_tf.serving.files import BatchingConfig, write_root_files

    cfg = spec if isinstance(spec, PreprocessConfig) else spec.preprocess
    if cfg.image_size != model.config.image_size:
        raise ExportError(f"{export_dir}: dataset image_size {cfg.image_size} != model image_size "
                          f"{model.config.image_size}")
    if cfg.context_slices != model.config.context_slices:
        raise ExportError(f"{export_dir}: dataset context_slices={cfg.context_slices} but the model takes "
                          f"context_slices={model.config.context_slices}")
    from tfrecords_tools.atomic import remove_stale_temporaries

    batching = batching or BatchingConfig()
    model_config = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "augment"}
    gens = {"mr": model.syn_mr, "ct": model.syn_ct}
    iteration = getattr(model, "iteration", None)   # the sidecars and series descriptions name it
    iterations = None if iteration is None else int(iteration.numpy())
    names = [SERVING_NAMES[d] for d in model.trained_directions]
    for d in model.trained_directions:
        remove_stale_temporaries(_name_dir(export_dir, d))
    if version is None:   # one number for the pair, above every number ever served (orphans included)
        version = 1 + max((v for n in names for v in existing_versions(os.path.join(export_dir, n))), default=0)
    remove_orphan_versions(export_dir, names)
    written = []
    try:
        for d in model.trained_directions:
            written.append(_write_version(gens[d], d, cfg, export_dir, version, model_config,
                                          batching.allowed_batch_sizes, iterations))
    except BaseException:
        for tmp, _ in written:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _rename_into_place(written)
    out = {SERVING_NAMES[d]: final for d, (_, final) in zip(model.trained_directions, written)}
    served = [n for n in DIRECTIONS if existing_versions(os.path.join(export_dir, n))]
    write_root_files(export_dir, served, serving_base_path, batching)
    return out


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
                          "was this SavedModel written by mrgan_tf.serving.export?") from e
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
    flags.DEFINE_string("serving_base_path", None, "The export dir as TF Serving will see it, for the base "
                        "paths in models.config (default: the export dir's absolute path).", flag_values=fv)


def export_run(run_dir: str, export_dir: str | None = None, checkpoint: str | None = None,
               version: int | None = None, serving_base_path: str | None = None) -> dict[str, str]:
    """Restore a run's generators and export them (importable twin of the CLI).

    Args:
        run_dir: the training run (run.json + checkpoints/).
        export_dir: where ``<name>/<version>/`` go (default: ``<run_dir>/export``).
        checkpoint: a checkpoint prefix (default: the latest).
        version: the version to write (default: next free).
        serving_base_path: the export dir as the server sees it (see ``export_model``).
    """
    from mrgan_tf.training.checkpoints import restore_generators, run_preprocess

    preprocess = run_preprocess(run_dir)                # fail fast, before building the model
    model, _ = restore_generators(run_dir, checkpoint)  # checks for a checkpoint before building
    return export_model(model, preprocess, export_dir or os.path.join(run_dir, "export"), version, serving_base_path)


def main(argv):
    fv = flags.FLAGS
    if not fv.run:
        raise app.UsageError("--run is required")
    import tensorflow as tf  # noqa: F401  (its OpError counts as a user error: a checkpoint that does not load)

    from mrgan_tf.training.checkpoints import resolve_checkpoint
    with cli.user_errors("export", also=(ValueError,)):   # ValueError: a checkpoint of another model
        requirements.require("export")
        checkpoint = fv.checkpoint or resolve_checkpoint(fv.run, fv.export_checkpoint)
        out = export_run(fv.run, fv.export_dir, checkpoint, fv.version, fv.serving_base_path)
    print("\n".join(written_lines(out, checkpoint)))
    return 0


def written_lines(written: dict[str, str], checkpoint: str | None = None) -> list[str]:
    """What export (and train, when it exports) prints: the version, its checkpoint, each SavedModel's folder."""
    version = os.path.basename(next(iter(written.values())))
    source = f" of checkpoint {checkpoint}" if checkpoint else ""
    return [f"exported version {version}{source}:"] + [f"  {name}: {path}" for name, path in written.items()]


run = cli.entry_point(define_flags, main)
