"""Synthesis to files: write the synthetic volume (NIfTI, .mha/.nrrd, DICOM), its provenance, send it.

``write_synthesis`` is the one path every output takes (single file, ``--root``, the
remote client), so format checks, provenance sidecars, the spread of fused predictions and
PACS sends are the same everywhere.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from absl import logging

from mrgan_tf.inference.predictors import (FUSIONS, INPUT_MODALITY, OUTPUT_MODALITY, OUTPUT_STEMS, Fusion, Predictor,
                                           SynthesisError)
from mrgan_tf.inference.synthesis import ct_like_warning, synthesize_with_spread
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.io.writers import beside, check_output, output_name, write_volume


@dataclasses.dataclass
class OutputOptions:
    """How a synthesized volume is written and where it goes, and what the user accepted (the CLI's flags)."""

    out_format: str | None = None        # nifti | mha | nrrd | dicom; None: from the output name
    out_dtype: str | None = None         # files: CT int16 / MR float32 by default
    overwrite: bool = False
    send: str | None = None              # AET@host:port: C-STORE the DICOM series there
    calling_aet: str = "MRGAN_TF"
    series_description: str | None = None
    series_number: int | None = None
    patient_id: str | None = None        # default: the input's folder name (non-DICOM inputs)
    body_part: str | None = None         # DICOM BodyPartExamined when the source does not say
    accept: tuple[str, ...] = ()         # input problems used anyway (plausibility kinds, e.g. wrong_modality)
    allow_windowed_ct: bool = False      # write a synthetic CT of a model that knows only a CT window, marked


def define_safety_flags(fv) -> None:
    """The flags that let a user past a safety refusal, named in the refusals (synthesize and client)."""
    from absl import flags

    from mrgan_tf.preprocess.plausibility import CONSTANT, OUT_OF_RANGE, WRONG_MODALITY
    flags.DEFINE_bool("allow_windowed_ct", False, "Write a synthetic CT even from a model trained on a CT display "
                      "window (e.g. the paper's 40/80 HU): marked WINDOWED, NOT FOR DOSE in its description, "
                      "comments and provenance. Without it such a model's synthetic CT is refused.", flag_values=fv)
    flags.DEFINE_multi_enum("accept", [], [WRONG_MODALITY, CONSTANT, OUT_OF_RANGE],
                            "Input problems to use anyway, as a warning: wrong_modality (the input looks like the "
                            "other modality), constant, out_of_range.", flag_values=fv)


def define_ensemble_flags(fv) -> None:
    """--fusion and the test-time augmentation flags (synthesize, client, evaluate): how several predictions of
    one volume are made and fused."""
    from absl import flags

    from mrgan_tf.inference.tta import define_tta_flags
    flags.DEFINE_enum("fusion", None, list(FUSIONS), "How several predictions (several --model, --tta copies) are "
                      "fused, voxel by voxel (default median); needs at least two.", flag_values=fv)
    define_tta_flags(fv)


def windowed_ct_note(predictor: Predictor) -> str | None:
    """What a synthetic CT of a model trained on a narrow CT window must say about itself (None: not such)."""
    cfg = predictor.preprocess
    if predictor.name != "mr2ct" or not cfg.ct_windowed:
        return None
    lo, hi = cfg.ct_hu_range
    return (f"WINDOWED {lo:g}..{hi:g} HU, NOT FOR DOSE: the model knows CT only within {lo:g}..{hi:g} HU, so air "
            f"and bone are written as {lo:g} or {hi:g} HU")


def check_synthetic_ct(predictor: Predictor, options: OutputOptions) -> str | None:
    """Refuse a synthetic CT of a windowed model unless ``allow_windowed_ct``; then the note it carries."""
    note = windowed_ct_note(predictor)
    if note is None:
        return None
    if not options.allow_windowed_ct:
        lo, hi = predictor.preprocess.ct_hu_range
        raise SynthesisError(
            f"{predictor.source}: this model knows CT only within {lo:g}..{hi:g} HU (its training window), so its "
            "synthetic CT has no air and no bone and must not be planned on; train on full-range records "
            "(make_records --flagfile=configs/synthrad_sct_records.cfg: --ct_range=-1024,3000 --bits=16), or pass "
            "--allow_windowed_ct to write it marked as windowed")
    logging.warning("%s", note)
    return note


def _series_info(predictor: Predictor, vol: Volume, model: dict, options: OutputOptions, note: str | None = None):
    """SeriesDescription, patient and derivation of a DICOM output (tool, direction, model version, CT range);
    a windowed synthetic CT's ``note`` leads its description and comments."""
    from mrgan_tf.inference.provenance import tool_version
    from mrgan_tf.io.dicom_write import SeriesInfo

    what = {"ct2mr": "synthetic MR from CT", "mr2ct": "synthetic CT from MR"}[predictor.name]
    iters = model.get("training_iterations")
    version = f"{predictor.name} v{model.get('version')}" + (f" {iters} it" if iters is not None else "")
    patient_dir = Path(vol.source).resolve().parent
    description = options.series_description or f"mrgan-tf {what}, {version}"
    lo, hi = predictor.preprocess.ct_hu_range
    return SeriesInfo(
        description=f"{note.split(':')[0]} {description}" if note else description,
        comments=note or "",
        series_number=options.series_number,
        patient_id=options.patient_id or patient_dir.name,
        patient_key=f"{patient_dir}|{options.patient_id or patient_dir.name}", body_part=options.body_part,
        derivation=f"MR-GAN {what} by mrgan-tf {tool_version()}, model {model.get('path')} ({version}, CT range "
                   f"{lo:g}..{hi:g} HU), input {vol.source}",
        model_name=f"MR-GAN {predictor.name}", software_version=tool_version())


SPREAD_TAG = "_sd"   # syn_ct.nii.gz -> syn_ct_sd.nii.gz, a DICOM folder syn_ct -> syn_ct_sd


def _spread_series(info, written: dict, modality: str, predictions: int):
    """The spread's DICOM series: same patient, study and frame of reference, its own number and words."""
    unit = "HU" if modality == "CT" else "MR units"
    number = written["series_number"]
    return dataclasses.replace(
        info, description=f"SD {unit} of series {number}: {info.description}", series_number=number + 1,
        comments=f"Per-voxel standard deviation in {unit} across {predictions} predictions (models x test-time "
                 f"augmented copies) of series {number} ({written['series_instance_uid']}), on its grid: where the "
                 "predictions disagree; not an error bound, not an image of the patient."
                 + (f" {info.comments}" if info.comments else ""))


def write_synthesis(predictor: Predictor | Fusion, vol: Volume, out: str, batch_size: int = 16,
                    progress: bool = False, options: OutputOptions | None = None,
                    mr_range: tuple[float, float] | None = None) -> dict:
    """Synthesize ``vol`` and write ``out`` (any writers format, atomically) plus ``<out>.json``; send if asked.

    A ``Fusion`` also writes the per-voxel spread of its predictions beside ``out``
    (``SPREAD_TAG``: same format and grid; a DICOM spread is a second series of the same
    study and frame of reference), with its own sidecar; a PACS gets both series.

    Args:
        predictor: the model (``load_predictor``), or several predictions of it (``Fusion``).
        vol: the input volume.
        out: the output file (or DICOM folder); its name picks the format unless ``options`` says.
        batch_size: slices per model call.
        progress: show a progress bar.
        options: format, dtype, overwrite, DICOM series fields and a PACS to send to (``OutputOptions``).
        mr_range: write a synthetic MR in the units of a reference whose robust range this is.

    Returns ``synthesize_with_spread``'s info plus input, output, format, sidecar, clipped, spread (and sent).
    """
    from mrgan_tf.inference import provenance
    from mrgan_tf.io import pacs

    options = options or OutputOptions()
    modality = OUTPUT_MODALITY[predictor.name]
    fmt, _ = check_output(out, options.out_format, modality, options.out_dtype, options.overwrite)
    spread_out = str(beside(out, SPREAD_TAG)) if isinstance(predictor, Fusion) else None
    spread_dtype = None if fmt == "dicom" else "float32"
    if spread_out is not None:
        check_output(spread_out, fmt, modality, spread_dtype, options.overwrite)
    peer = pacs.parse_peer(options.send) if options.send else None
    if peer is not None and fmt != "dicom":
        raise SynthesisError(f"{out}: --send needs a DICOM series output (--out_format=dicom), not {fmt}")
    note = check_synthetic_ct(predictor, options)
    if predictor.name == "ct2mr":
        warning = ct_like_warning(vol)
        if warning:
            logging.warning(warning)
    model = predictor.model_record()
    result, spread, timing = synthesize_with_spread(predictor, vol, batch_size, progress, mr_range=mr_range,
                                                    accept=options.accept)
    series = _series_info(predictor, vol, model, options, note)
    written = write_volume(result, out, fmt, modality, options.out_dtype, options.overwrite, series, vol.header,
                           progress)
    if written.get("clipped"):
        logging.warning("%s: %s", out, written["clipped"])
    lo, hi = predictor.preprocess.ct_hu_range
    doc = provenance.provenance(model, vol.source, out, predictor.name, predictor.preprocess.to_dict(), written,
                                {"synthesis": timing, "units": timing["units"], "ct_range_hu": [lo, hi],
                                 "windowed_ct": note, "uncertainty": {"spread": None, "is": timing["uncertainty"]}})
    if spread is not None:
        spread_series = _spread_series(series, written, modality, predictor.predictions) if fmt == "dicom" else None
        spread_written = write_volume(spread, spread_out, fmt, modality, spread_dtype, options.overwrite,
                                      spread_series, vol.header, progress)
        doc["uncertainty"] = {"spread": os.path.abspath(spread_out), "is": timing["uncertainty"],
                              **timing["fusion"]}
        provenance.write_sidecar(spread_out, provenance.for_output(doc, spread_out, spread_written,
                                                                   spread_of=os.path.abspath(out)))
    info = {"input": vol.source, "output": str(out), "shape": list(vol.shape), "format": fmt, "spread": spread_out,
            "sidecar": str(provenance.write_sidecar(out, doc)), "clipped": written.get("clipped"), **timing}
    if peer is not None:
        sent = [pacs.store_series(out, peer, calling_aet=options.calling_aet, progress=progress).summary()]
        if spread_out is not None:
            sent.append(pacs.store_series(spread_out, peer, calling_aet=options.calling_aet,
                                          progress=progress).summary())
        info["sent"] = "; ".join(sent)
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
    from mrgan_tf.io.layout import LayoutError, not_patients_line, scan_root
    from mrgan_tf.io.pacs import PacsError

    options = options or OutputOptions()
    name = output_name(OUTPUT_STEMS[predictor.name], options.out_format or "nifti")

    try:
        contents = scan_root(root)
    except LayoutError as e:
        raise SynthesisError(str(e)) from None
    patients = contents.patients
    if contents.not_patients:
        logging.warning("%s: %s", root, not_patients_line(contents.not_patients))
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
