"""Whole-volume synthesis: a CT volume in, a synthetic MR volume on the same grid out.

    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --ct=ct.nii.gz --out=syn_mr.nii.gz
    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --root=DATASET --out_dir=DIR
    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --mr=mr.nii.gz --out=syn_ct.mha
    python -m mrgan_tf.synthesize --model=EXPORT_OR_RUN --ct=ct_dicom/ --out=syn_mr_dicom/ --send=PACS@host:104
    python -m mrgan_tf.synthesize --model=AXIAL --model=CORONAL --model=SAGITTAL --ct=ct.nii.gz --out=fused.nii.gz
    python -m mrgan_tf.synthesize --model=SEED1 --model=SEED2 --tta=flip,shift --mr=mr.nii.gz --out=syn_ct.nii.gz

The input is read with the same readers and sliced with the same preprocessing
as make_records (``prepare_patient`` with the model's stored PreprocessConfig),
every slice of the model's plane goes through the generator (a 2.5D model gets
its neighbour stacks built and its overlapping predictions averaged), and the
slices are put back on the input's exact grid (shape and affine) with
``restack_to_grid``. Several ``--model`` (one per plane, or several of one
plane) are fused there voxel by voxel (``--fusion=median|mean``, ``Fusion``), and so
are test-time augmented copies (``--tta=flip,shift``, ``inference.tta``: each mapped
back exactly first). Whenever more than one prediction is fused, their per-voxel
standard deviation is written beside the output in the same format and on the same
grid (``syn_ct.nii.gz`` -> ``syn_ct_sd.nii.gz``; a DICOM output gets a second series);
one model without ``--tta`` writes no spread, and its sidecar says so.

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
``<output>.json`` beside each (``mrgan_tf.inference.provenance``); ``--send`` C-STOREs a
DICOM series to a PACS (``mrgan_tf.io.pacs``).

``--precision=bfloat16`` runs the generator in bf16 on a CPU with AVX512-BF16 or AMX
(``inference.precision``: about 3x less CPU per slice; the output differences are
measured in docs/BENCHMARKS.md, and the sidecar records the precision).

``--model`` is an export dir (``<dir>/ct2mr/<version>``), a model or version dir
of one SavedModel (uses its ``normalised`` signature; preprocessing runs here in
numpy, the same code as make_records), or a training run dir (uses the Keras
generator from the latest checkpoint).
"""
from __future__ import annotations

import sys

from absl import app, flags

from mrgan_tf import cli, requirements
from mrgan_tf.inference import client
from mrgan_tf.inference.outputs import (OutputOptions, define_ensemble_flags, define_safety_flags, synthesize_root,
                                        write_synthesis)
from mrgan_tf.inference.precision import check_precision, define_precision_flags, precision_from_flags
from mrgan_tf.inference.predictors import (INPUT_MODALITY, OUTPUT_MODALITY, Fusion, Predictor, SynthesisError,
                                           load_predictor)
from mrgan_tf.inference.synthesis import reference_mr_range, refuse_implausible
from mrgan_tf.inference.tta import TTAConfig, tta_from_flags
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.writers import DTYPES, FORMATS, check_output


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_multi_string("model", None, "Export dir (holding ct2mr/<version>), a SavedModel model/version "
                              "dir, or a training run dir. Repeat it to fuse several models (e.g. one per plane, "
                              "or runs of several seeds); the spread is written beside the output.", flag_values=fv)
    define_ensemble_flags(fv)
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
    define_precision_flags(fv)
    flags.DEFINE_string("mr_reference", None, "ct2mr: write the synthetic MR in this MR volume's units (its "
                        "robust percentile range inside the body), instead of the paper's 0-255.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    define_safety_flags(fv)
    client.define_connection_flags(fv)   # --server instead of --model: the generator runs on TF Serving




def _direction(fv) -> str:
    if fv.ct and fv.mr:
        raise app.UsageError("give --ct or --mr, not both")
    inferred = "mr2ct" if fv.mr else "ct2mr"
    if fv.direction and (fv.ct or fv.mr) and fv.direction != inferred:
        raise app.UsageError(f"--direction={fv.direction} does not match the input flag (--{'mr' if fv.mr else 'ct'})")
    return fv.direction or inferred


def _load(fv, direction: str, tta: TTAConfig, precision: str) -> Predictor | Fusion:
    if fv.server:
        members = (client.connect(client.connection_from_flags(fv), direction),)
    else:
        members = tuple(load_predictor(m, direction, precision) for m in fv.model)
    if len(members) > 1 or fv.fusion or tta.augment:   # Fusion refuses one prediction
        return Fusion(members, fv.fusion or "median", tta)
    return members[0]


def main(argv):
    fv = flags.FLAGS
    single = bool(fv.ct or fv.mr)
    if bool(fv.model) == bool(fv.server):
        raise app.UsageError("give --model or --server (one of them)")
    if fv.fusion and len(fv.model or ()) < 2 and not fv.tta:
        raise app.UsageError(f"--fusion={fv.fusion} needs at least two --model, or --tta; got "
                             f"{len(fv.model or ())} --model")
    if single == bool(fv.root):
        raise app.UsageError("give either --ct/--mr with --out, or --root with --out_dir")
    if single and not fv.out:
        raise app.UsageError("--out is required with --ct/--mr")
    if fv.root and not fv.out_dir:
        raise app.UsageError("--out_dir is required with --root")
    direction = _direction(fv)
    options = OutputOptions(fv.out_format, fv.out_dtype, fv.overwrite, fv.send, fv.calling_aet,
                            fv.series_description, fv.series_number, fv.patient_id, fv.body_part,
                            tuple(fv.accept), fv.allow_windowed_ct)
    from mrgan_tf.io.pacs import parse_peer
    with cli.user_errors("synthesize"):   # bad flags and output names fail before TensorFlow loads
        requirements.require("synthesize", server=fv.server, send=fv.send)
        tta = tta_from_flags(fv)
        precision = precision_from_flags(fv).precision
        if fv.server and precision != "float32":
            raise SynthesisError(f"--precision={precision} is for --model: a server computes in its own precision")
        check_precision(precision)
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
            refuse_implausible(vol, INPUT_MODALITY[direction], tuple(fv.accept))
            predictor = _load(fv, direction, tta, precision)
            rng = reference_mr_range(fv.mr_reference, predictor) if fv.mr_reference else None
            info = write_synthesis(predictor, vol, fv.out, fv.batch_size, fv.progress, options, mr_range=rng)
            _print_done(info, model_s=True)
            return 0
        done, errors = synthesize_root(_load(fv, direction, tta, precision), fv.root, fv.out_dir, fv.batch_size,
                                       fv.progress, options)
    for info in done:
        _print_done(info)
    for pid, err in errors.items():
        print(f"synthesize: error: patient {pid}: {err}", file=sys.stderr)
    return 1 if errors else 0


def _print_done(info: dict, model_s: bool = False) -> None:
    print(f"{info['output']}: {info['slices']} slices in {info['total_s']:.1f} s"
          + (f" (model {info['model_s']:.1f} s)" if model_s else "") + f"; provenance {info['sidecar']}")
    if info.get("spread"):
        print(f"  spread of {info['fusion']['predictions']} predictions: {info['spread']}")
    if info.get("clipped"):
        print(f"  {info['output']}: {info['clipped']}")
    if "sent" in info:
        print(f"  {info['sent']}")


run = cli.entry_point(define_flags, main)
