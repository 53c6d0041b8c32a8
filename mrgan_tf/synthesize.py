"""Whole-volume synthesis: a CT volume in, a synthetic MR volume on the same grid out.

    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --ct=ct.nii.gz --out=syn_mr.nii.gz
    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --root=DATASET --out_dir=DIR
    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --mr=mr.nii.gz --out=syn_ct.mha
    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --ct=ct_dicom/ --out=syn_mr_dicom/ --send=PACS@host:104
    python -m mrgan_tf.synthesize --model=AXIAL --model=CORONAL --model=SAGITTAL --ct=ct.nii.gz --out=fused.nii.gz

The input is read with the same readers and sliced with the same preprocessing
as make_records (``prepare_patient`` with the model's stored PreprocessConfig),
every slice of the model's plane goes through the generator (a 2.5D model gets
its neighbour stacks built and its overlapping predictions averaged), and the
slices are put back on the input's exact grid (shape and affine) with
``restack_to_grid``. Several ``--model`` (one per plane, or several of one
plane) are fused there voxel by voxel (``--fusion=median|mean``, ``Fusion``).

Output scales: synthetic CT in HU as int16, over the CT interval the model's
records stored (the paper's 40/80 window, or a full range such as -1024..3000 HU
with ``make_records --ct_range``); synthetic MR on the paper's 0-255 scale
(255 = the upper MR normalisation percentile), or in a reference MR's units with
``--mr_reference`` (its robust percentile range). Voxels outside the model's
field of view (outside the canvas, or outside the resampled grid) are 0 for MR
(the reference's lower percentile in reference units) and -1024 HU (air) for CT;
how much of the body that was is reported.

Outputs (``mrgan_tf.io.writers``): NIfTI, .mha/.nrrd or a DICOM series folder,
chosen by the output name or ``--out_format``; a provenance sidecar
``<output>.json`` beside each (``mrgan_tf.provenance``); ``--send`` C-STOREs a
DICOM series to a PACS (``mrgan_tf.pacs``).

``--model`` is an export dir (``<dir>/ct2mr/<version>``), a model or version dir
of one SavedModel (uses its ``normalised`` signature; preprocessing runs here in
numpy, the same code as make_records), or a training run dir (uses the Keras
generator from the latest checkpoint).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from absl import app, flags, logging

from mrgan_tf import cli
from mrgan_tf.context import depth_problem, volume_generator
from mrgan_tf.errors import UserError
from mrgan_tf.export import (DIRECTIONS, SERVING_NAMES, ExportError, load_exported, read_info,
                             resolve_version_dir)
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.plausibility import check_volume, raise_or_warn
from mrgan_tf.intensity import ct_from_unit, denormalise_mr, dequantise, from_model_range, to_model_range
from mrgan_tf.io.writers import DTYPES, FORMATS, check_output, output_name, write_volume
from mrgan_tf.preprocess import PreprocessConfig, prepare_patient, restack_to_grid

AIR_HU = -1024.0
CT_LIKE_HU = (-1100.0, 4000.0)   # plausible HU range of a CT
OUTPUT_NAMES = {"ct2mr": "syn_mr.nii.gz", "mr2ct": "syn_ct.nii.gz"}
OUTPUT_STEMS = {"ct2mr": "syn_mr", "mr2ct": "syn_ct"}
INPUT_MODALITY = {"ct2mr": "ct", "mr2ct": "mr"}
OUTPUT_MODALITY = {"ct2mr": "MR", "mr2ct": "CT"}


class SynthesisError(UserError, ValueError):
    """Bad model or input for synthesis; the message names the path."""


@dataclasses.dataclass
class OutputOptions:
    """How a synthesized volume is written and where it goes (the CLI's output flags)."""

    out_format: str | None = None        # nifti | mha | nrrd | dicom; None: from the output name
    out_dtype: str | None = None         # files: CT int16 / MR float32 by default
    overwrite: bool = False
    send: str | None = None              # AET@host:port: C-STORE the DICOM series there
    calling_aet: str = "MRGAN_TF"
    series_description: str | None = None
    series_number: int | None = None
    patient_id: str | None = None        # default: the input's folder name (non-DICOM inputs)
    body_part: str | None = None         # DICOM BodyPartExamined when the source does not say


# --------------------------------------------------------------------------- models


@dataclasses.dataclass
class Predictor:
    """One direction's generator on ordered [N, S, S, 1] slices in [-1, 1], plus its preprocessing."""

    name: str                                   # ct2mr | mr2ct
    preprocess: PreprocessConfig
    source: str                                 # the SavedModel version dir or run dir
    fn: Callable[[np.ndarray], np.ndarray]      # [-1, 1] -> [-1, 1]

    def model_record(self) -> dict:
        """What the provenance sidecar says of the model: path, version, iterations, run config."""
        from mrgan_tf import provenance
        return provenance.model_record(self.source, self.name)

    def predict01(self, stack01: np.ndarray, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """(Z, S, S) ordered slices on 0..1 -> (Z, S, S) on 0..1, in batches (tqdm bar when ``progress``).

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
        starts = range(0, len(stack01), batch_size)
        for i in tqdm(starts, desc=f"{self.name} slices", unit="batch", disable=not progress, leave=False):
            lo, hi = max(0, i - margin), min(len(stack01), i + batch_size + margin)
            y = np.asarray(self.fn(to_model_range(stack01[lo:hi, ..., None])), np.float32)
            out[i:i + batch_size] = from_model_range(y[i - lo:i - lo + batch_size, ..., 0])
        return np.clip(out, 0.0, 1.0)


FUSIONS = {"median": np.median, "mean": np.mean}


@dataclasses.dataclass
class Fusion:
    """Several models of one direction (one per plane, or several of one plane) fused voxel by voxel.

    Each member synthesizes the whole volume on the input grid (a 2.5D member has
    already averaged its overlapping stack predictions), then the volumes are
    fused by ``method``: median (Spadea et al.'s choice; robust to one plane's
    artefact) or mean. Members must share their preprocessing except the plane
    and the stack depth, so their volumes are in the same units on the same body.
    """

    members: tuple[Predictor, ...]
    method: str = "median"

    def __post_init__(self):
        self.members = tuple(self.members)
        if self.method not in FUSIONS:
            raise SynthesisError(f"--fusion must be one of {', '.join(FUSIONS)}, got {self.method!r}")
        if len(self.members) < 2:
            raise SynthesisError(f"fusion needs at least two models, got {len(self.members)} "
                                 f"({', '.join(p.source for p in self.members) or 'none'}): give --model once "
                                 "per model")
        first = self.members[0]
        want = first.preprocess.without_layout()
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
    def preprocess(self) -> PreprocessConfig:
        return self.members[0].preprocess

    def model_record(self) -> dict:
        """The provenance of a fused volume: every member's record and the method."""
        records = [p.model_record() for p in self.members]
        return {"path": ", ".join(str(r.get("path")) for r in records), "kind": "fusion", "direction": self.name,
                "version": f"{self.method} of {len(records)}", "training_iterations": None,
                "fusion": self.method, "models": records}


def _is_run_dir(path: str) -> bool:
    from mrgan_tf.checkpoints import RUN_CONFIG

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


def load_predictors(path: str, names: tuple[str, ...] | None = None) -> dict[str, Predictor]:
    """Predictors for ``names`` (default: all the model provides) from a run dir or a SavedModel path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SynthesisError(f"{path}: model path does not exist")

    def check(have):
        wanted = have if names is None else tuple(names)
        missing = [n for n in wanted if n not in have]
        if missing:
            raise SynthesisError(f"{path}: no {'/'.join(missing)} model here (it has: {', '.join(have) or 'none'})")
        return wanted

    if _is_run_dir(path):
        from mrgan_tf.checkpoints import restore_generators
        from mrgan_tf.spec import DatasetSpec

        model, run_cfg = restore_generators(path)
        wanted = check(tuple(SERVING_NAMES[d] for d in model.trained_directions))
        cfg = DatasetSpec.load(run_cfg["records"]).preprocess
        gens = {"ct2mr": model.syn_mr, "mr2ct": model.syn_ct}
        return {n: Predictor(n, cfg, path, _keras_fn(gens[n], cfg)) for n in wanted}
    out = {}
    for n in check(exported_models(path)):
        exported = load_exported(path, n)
        out[n] = Predictor(n, exported.preprocess, exported.version_dir, _saved_model_fn(exported))
    return out


def load_predictor(path: str, name: str = "ct2mr") -> Predictor:
    return load_predictors(path, (name,))[name]


# --------------------------------------------------------------------------- volumes


def ct_like_warning(vol: Volume) -> str | None:
    """A warning when ``vol`` does not look like a CT in HU (None when it does)."""
    lo, hi = float(vol.data.min()), float(vol.data.max())
    if lo < CT_LIKE_HU[0] or hi > CT_LIKE_HU[1] or hi < 100.0:
        return (f"{vol.source}: values {lo:.0f}..{hi:.0f} do not look like a CT in HU (expected within "
                f"{CT_LIKE_HU[0]:.0f}..{CT_LIKE_HU[1]:.0f} with a max >= 100); synthesizing anyway")
    return None


def prepare_input(predictor: Predictor, vol: Volume):
    """``prepare_patient`` for the model's input modality; returns (prepared, (Z, S, S) stack on 0..1)."""
    raise_or_warn(check_volume(vol, INPUT_MODALITY[predictor.name]), accept=("unsigned_ct",))   # others: errors
    cfg = predictor.preprocess
    from_ct = predictor.name == "ct2mr"
    prep = prepare_patient(vol, None, None, cfg) if from_ct else prepare_patient(None, vol, None, cfg)
    depth = depth_problem(prep.shape[2], cfg.context_slices, cfg.slice_axis)
    if depth:
        raise VolumeError(vol.source, depth)
    return prep, dequantise(prep.ct if from_ct else prep.mr, cfg.bits)


def output_units(predictor: Predictor, mr_range: tuple[float, float] | None = None) -> str:
    """What the synthetic volume's values mean (written into the output's metadata)."""
    if predictor.name == "mr2ct":
        lo, hi = predictor.preprocess.ct_hu_range
        return f"HU (int16; model range {lo:g}..{hi:g} HU, -1024 outside the field of view)"
    if mr_range is not None:
        return (f"reference MR units (0..1 of the model mapped onto the reference's robust range "
                f"{mr_range[0]:g}..{mr_range[1]:g})")
    return "0-255 (the paper's scale: 255 = the upper MR normalisation percentile)"


def to_output_units(predictor: Predictor, out01: np.ndarray,
                    mr_range: tuple[float, float] | None = None) -> tuple[np.ndarray, float]:
    """0..1 model output -> (values in output units, fill value outside the field of view).

    Synthetic CT: HU through the dataset's CT mapping. Synthetic MR: the paper's 0-255, or the
    reference's units when its robust range ``mr_range`` (lo, hi percentiles) is known.
    """
    if predictor.name == "ct2mr":
        if mr_range is not None:
            return denormalise_mr(out01, *mr_range), float(mr_range[0])
        return out01 * 255.0, 0.0
    return ct_from_unit(out01, predictor.preprocess), AIR_HU


def synthesize_volume(predictor: Predictor | Fusion, vol: Volume, batch_size: int = 16, progress: bool = False,
                      mr_range: tuple[float, float] | None = None) -> tuple[Volume, dict]:
    """Synthesize every slice of ``vol`` (in the model's plane; each member's, fused, for a ``Fusion``);
    returns the volume on ``vol``'s grid and an info dict.

    A synthetic CT comes back as int16 HU; a synthetic MR as float32 on 0-255 or, with
    ``mr_range``, in the reference's units. The info dict holds timings, the units and how
    much of the body fell outside the model's canvas.

    Args:
        predictor: the model (``load_predictor``: a SavedModel export or a run's checkpoint).
        vol: the input volume (CT for ct2mr, MR for mr2ct), any orientation and spacing.
        batch_size: slices per model call.
        progress: show a progress bar.
        mr_range: a reference MR's robust (lo, hi) range: the synthetic MR comes out in its units.
    """
    members = predictor.members if isinstance(predictor, Fusion) else (predictor,)
    seconds = dict.fromkeys(("prepare_s", "model_s", "restack_s"), 0.0)
    volumes, slices, lost = [], 0, None
    for member in members:
        t0 = time.perf_counter()
        prep, stack01 = prepare_input(member, vol)
        t1 = time.perf_counter()
        out01 = member.predict01(stack01, batch_size, progress)
        t2 = time.perf_counter()
        values, fill = to_output_units(member, out01, mr_range)
        volumes.append(restack_to_grid(values, prep.geometry, vol, order=1, fill=fill))
        for key, dt in zip(seconds, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
            seconds[key] += dt
        slices += int(len(stack01))
        problem = prep.body_loss_problem(member.preprocess, vol.source)
        if problem:
            logging.warning("%s; those voxels get the fill value", problem)
        if lost is None or prep.body_lost_fraction > lost.body_lost_fraction:
            lost = prep
    out = volumes[0]
    if len(volumes) > 1:
        t0 = time.perf_counter()
        fused = FUSIONS[predictor.method](np.stack([v.data for v in volumes]), axis=0).astype(np.float32)
        out = Volume(fused, out.affine, out.source)
        seconds["restack_s"] += time.perf_counter() - t0
    if predictor.name == "mr2ct":
        out = Volume(np.rint(out.data).astype(np.int16), out.affine, out.source)
    info = {"slices": slices, **seconds, "total_s": sum(seconds.values()), "units": output_units(predictor, mr_range),
            "body_voxels_outside": lost.body_voxels_outside, "body_lost_fraction": round(lost.body_lost_fraction, 6)}
    if len(members) > 1:
        info["fusion"] = {"method": predictor.method, "models": len(members),
                          "planes": [m.preprocess.slice_axis for m in members],
                          "context_slices": [m.preprocess.context_slices for m in members]}
    return out, info


def _series_info(predictor: Predictor, vol: Volume, model: dict, options: OutputOptions):
    """SeriesDescription, patient and derivation of a DICOM output (tool, direction, model version)."""
    from mrgan_tf.io.dicom_write import SeriesInfo
    from mrgan_tf.provenance import tool_version

    what = {"ct2mr": "synthetic MR from CT", "mr2ct": "synthetic CT from MR"}[predictor.name]
    iters = model.get("training_iterations")
    version = f"{predictor.name} v{model.get('version')}" + (f" {iters} it" if iters is not None else "")
    patient_dir = Path(vol.source).resolve().parent
    return SeriesInfo(
        description=options.series_description or f"mrgan-tf {what}, {version}",
        series_number=options.series_number,
        patient_id=options.patient_id or patient_dir.name,
        patient_key=f"{patient_dir}|{options.patient_id or patient_dir.name}", body_part=options.body_part,
        derivation=f"MR-GAN {what} by mrgan-tf {tool_version()}, model {model.get('path')} ({version}), "
                   f"input {vol.source}",
        model_name=f"MR-GAN {predictor.name}", software_version=tool_version())


def write_synthesis(predictor: Predictor, vol: Volume, out: str, batch_size: int = 16,
                    progress: bool = False, options: OutputOptions | None = None,
                    mr_range: tuple[float, float] | None = None) -> dict:
    """Synthesize ``vol`` and write ``out`` (any writers format, atomically) plus ``<out>.json``; send if asked.

    Args:
        predictor: the model (``load_predictor``).
        vol: the input volume.
        out: the output file (or DICOM folder); its name picks the format unless ``options`` says.
        batch_size: slices per model call.
        progress: show a progress bar.
        options: format, dtype, overwrite, DICOM series fields and a PACS to send to (``OutputOptions``).
        mr_range: write a synthetic MR in the units of a reference whose robust range this is.

    Returns ``synthesize_volume``'s info plus input, output, format, sidecar, clipped (and sent).
    """
    from mrgan_tf import pacs, provenance

    options = options or OutputOptions()
    modality = OUTPUT_MODALITY[predictor.name]
    fmt, _ = check_output(out, options.out_format, modality, options.out_dtype, options.overwrite)
    peer = pacs.parse_peer(options.send) if options.send else None
    if peer is not None and fmt != "dicom":
        raise SynthesisError(f"{out}: --send needs a DICOM series output (--out_format=dicom), not {fmt}")
    if predictor.name == "ct2mr":
        warning = ct_like_warning(vol)
        if warning:
            logging.warning(warning)
    model = predictor.model_record()
    result, timing = synthesize_volume(predictor, vol, batch_size, progress, mr_range=mr_range)
    written = write_volume(result, out, fmt, modality, options.out_dtype, options.overwrite,
                           _series_info(predictor, vol, model, options), vol.header, progress)
    if written.get("clipped"):
        logging.warning("%s: %s", out, written["clipped"])
    doc = provenance.provenance(model, vol.source, out, predictor.name, predictor.preprocess.to_dict(), written,
                                {"synthesis": timing, "units": timing["units"]})
    info = {"input": vol.source, "output": str(out), "shape": list(vol.shape), "format": fmt,
            "sidecar": str(provenance.write_sidecar(out, doc)), "clipped": written.get("clipped"), **timing}
    if peer is not None:
        info["sent"] = pacs.store_series(out, peer, calling_aet=options.calling_aet, progress=progress).summary()
    return info


def synthesize_file(predictor: Predictor, src: str, out: str, batch_size: int = 16,
                    progress: bool = False, options: OutputOptions | None = None) -> dict:
    """Read ``src`` (any format read_volume knows), synthesize, write ``out``. VolumeError on bad input.

    Args:
        predictor: the model (``load_predictor``).
        src: the input file or DICOM folder.
        out: the output file or DICOM folder (see ``write_synthesis``).
        batch_size: slices per model call.
        progress: show a progress bar.
        options: how the output is written and where it goes (``OutputOptions``).
    """
    return write_synthesis(predictor, read_volume(src), out, batch_size, progress, options)


def synthesize_root(predictor: Predictor, root: str, out_dir: str, batch_size: int = 16,
                    progress: bool = False, options: OutputOptions | None = None
                    ) -> tuple[list[dict], dict[str, str]]:
    """Every patient of ``root`` with an input for the model -> ``out_dir/<patient>/syn_*`` (.nii.gz by default).

    Bad patients (unreadable input, existing output, a failed send) are reported and
    skipped; returns (done, {patient: error}).

    Args:
        predictor: the model (``load_predictor``).
        root: a dataset root, ``<root>/<patient_id>/{ct,mr}`` (``io.layout.discover_patients``).
        out_dir: where ``<patient_id>/syn_*`` go.
        batch_size: slices per model call.
        progress: show progress bars.
        options: how each output is written and where it goes (``OutputOptions``).
    """
    from mrgan_tf.io.layout import LayoutError, discover_patients
    from mrgan_tf.pacs import PacsError

    options = options or OutputOptions()
    name = output_name(OUTPUT_STEMS[predictor.name], options.out_format or "nifti")

    try:
        patients = discover_patients(root)
    except LayoutError as e:
        raise SynthesisError(str(e)) from None
    modality = INPUT_MODALITY[predictor.name]
    todo = {pid: f.files.get(modality) for pid, f in patients.items() if f.files.get(modality) is not None}
    errors = {pid: f.error for pid, f in patients.items() if f.error}
    if not todo:
        raise SynthesisError(f"{root}: no patient folder has a {modality} input")
    done = []
    for pid, src in todo.items():
        try:
            done.append(synthesize_file(predictor, str(src), os.path.join(out_dir, pid, name), batch_size, progress,
                                        dataclasses.replace(options, patient_id=options.patient_id or pid)))
        except (VolumeError, PacsError) as e:
            errors[pid] = str(e)
            logging.error("%s", e)
    return done, errors


# --------------------------------------------------------------------------- CLI


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_multi_string("model", None, "Export dir (holding ct2mr/<version>), a SavedModel model/version "
                              "dir, or a training run dir. Repeat it to fuse several models (e.g. one per plane).",
                              flag_values=fv)
    flags.DEFINE_enum("fusion", None, list(FUSIONS), "How the volumes of several --model are fused, voxel by "
                      "voxel (default median); needs at least two --model.", flag_values=fv)
    flags.DEFINE_string("ct", None, "Input CT: NIfTI, .mha/.nrrd or a DICOM folder (ct2mr).", flag_values=fv)
    flags.DEFINE_string("mr", None, "Input MR (mr2ct).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output: .nii.gz/.nii, .mha, .nrrd, or a folder name (no suffix) for a DICOM "
                        "series.", flag_values=fv)
    flags.DEFINE_string("root", None, "Dataset root <root>/<patient>/ct.nii.gz ...: synthesize every patient.",
                        flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Output folder for --root: <out_dir>/<patient>/syn_mr.nii.gz "
                        "(or .mha, .nrrd, a syn_mr/ DICOM folder with --out_format).", flag_values=fv)
    flags.DEFINE_enum("out_format", None, list(FORMATS), "Output format (default: from --out's name; nifti for "
                      "--root).", flag_values=fv)
    flags.DEFINE_enum("out_dtype", None, list(DTYPES), "Stored type of .nii/.mha/.nrrd outputs (default: int16 for "
                      "a synthetic CT, float32 for a synthetic MR; DICOM: CT int16, MR uint16).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output file or DICOM folder.", flag_values=fv)
    flags.DEFINE_string("send", None, "AET@host:port: C-STORE each DICOM series output to this PACS.",
                        flag_values=fv)
    flags.DEFINE_string("calling_aet", "MRGAN_TF", "Our AE title when sending.", flag_values=fv)
    flags.DEFINE_string("series_description", None, "DICOM SeriesDescription (default: tool, direction, model "
                        "version).", flag_values=fv)
    flags.DEFINE_integer("series_number", None, "DICOM SeriesNumber (default: the source's + 1000, else 1000).",
                         flag_values=fv)
    flags.DEFINE_string("patient_id", None, "PatientID of a DICOM output from a non-DICOM input (default: the "
                        "input's folder name).", flag_values=fv)
    flags.DEFINE_string("body_part", None, "DICOM BodyPartExamined (e.g. HEAD) when the input does not say; "
                        "without it Laterality is left empty (unknown).", flag_values=fv)
    flags.DEFINE_enum("direction", None, ["ct2mr", "mr2ct"], "Default: mr2ct with --mr, else ct2mr.",
                      flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Slices per model call.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("mr_reference", None, "ct2mr: write the synthetic MR in this MR volume's units (its "
                        "robust percentile range inside the body), instead of the paper's 0-255.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.DEFINE_string("server", None, "Run the generator on a TF Serving server instead of --model: host:port "
                        "(gRPC) or http://host:port (REST); see mrgan_tf.client.", flag_values=fv)


def reference_mr_range(path: str, predictor: Predictor) -> tuple[float, float]:
    """The robust (lo, hi) of a reference MR, as make_records computes it: its body, the model's percentiles."""
    from mrgan_tf.preprocess import body_mask_from_mr, mr_range
    if predictor.name != "ct2mr":
        raise SynthesisError(f"--mr_reference={path}: only a synthetic MR (ct2mr) has reference units")
    ref = read_volume(path)
    return mr_range(ref.data, body_mask_from_mr(ref.data), predictor.preprocess.mr_percentiles)


def _direction(fv) -> str:
    if fv.ct and fv.mr:
        raise app.UsageError("give --ct or --mr, not both")
    inferred = "mr2ct" if fv.mr else "ct2mr"
    if fv.direction and (fv.ct or fv.mr) and fv.direction != inferred:
        raise app.UsageError(f"--direction={fv.direction} does not match the input flag (--{'mr' if fv.mr else 'ct'})")
    return fv.direction or inferred


def _load(fv, direction: str) -> Predictor | Fusion:
    if fv.server:
        from mrgan_tf.client import ClientConfig, connect
        return connect(ClientConfig(fv.server), direction)
    if len(fv.model) > 1 or fv.fusion:   # Fusion refuses a single model
        return Fusion(tuple(load_predictor(m, direction) for m in fv.model), fv.fusion or "median")
    return load_predictor(fv.model[0], direction)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    fv = flags.FLAGS
    single = bool(fv.ct or fv.mr)
    if bool(fv.model) == bool(fv.server):
        raise app.UsageError("give --model or --server (one of them)")
    if fv.fusion and len(fv.model or ()) < 2:
        raise app.UsageError(f"--fusion={fv.fusion} needs at least two --model, got {len(fv.model or ())}")
    if single == bool(fv.root):
        raise app.UsageError("give either --ct/--mr with --out, or --root with --out_dir")
    if single and not fv.out:
        raise app.UsageError("--out is required with --ct/--mr")
    if fv.root and not fv.out_dir:
        raise app.UsageError("--out_dir is required with --root")
    direction = _direction(fv)
    options = OutputOptions(fv.out_format, fv.out_dtype, fv.overwrite, fv.send, fv.calling_aet,
                            fv.series_description, fv.series_number, fv.patient_id, fv.body_part)
    from mrgan_tf.pacs import parse_peer
    with cli.user_errors("synthesize"):   # bad flags and output names fail before TensorFlow loads
        if fv.send:
            parse_peer(fv.send)
        if single:
            check_output(fv.out, fv.out_format, OUTPUT_MODALITY[direction], fv.out_dtype, fv.overwrite)
        elif fv.send and fv.out_format != "dicom":
            raise SynthesisError("--send needs --out_format=dicom")
    import tensorflow as tf  # noqa: F401  (its OpError counts as a user error: a SavedModel that does not load)

    with cli.user_errors("synthesize"):
        if single:   # bad input fails before the model loads
            vol = read_volume(fv.ct or fv.mr)
            predictor = _load(fv, direction)
            rng = reference_mr_range(fv.mr_reference, predictor) if fv.mr_reference else None
            info = write_synthesis(predictor, vol, fv.out, fv.batch_size, fv.progress, options, mr_range=rng)
            _print_done(info, model_s=True)
            return 0
        done, errors = synthesize_root(_load(fv, direction), fv.root, fv.out_dir, fv.batch_size,
                                       fv.progress, options)
    for info in done:
        _print_done(info)
    for pid, err in errors.items():
        print(f"synthesize: error: patient {pid}: {err}", file=sys.stderr)
    return 1 if errors else 0


def _print_done(info: dict, model_s: bool = False) -> None:
    print(f"{info['output']}: {info['slices']} slices in {info['total_s']:.1f} s"
          + (f" (model {info['model_s']:.1f} s)" if model_s else "") + f"; provenance {info['sidecar']}")
    if info.get("clipped"):
        print(f"  {info['output']}: {info['clipped']}")
    if "sent" in info:
        print(f"  {info['sent']}")


run = cli.entry_point(define_flags, main)


if __name__ == "__main__":
    run()
