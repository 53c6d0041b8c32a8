"""The ``dose`` command line: read the inputs, run ``dose_check``, write the report folder in one piece.

The folder (``--out``) is filled under a temporary name and renamed when every file is written,
so a failed or interrupted run leaves no half report; an existing folder is replaced only with
``--overwrite``.
"""
from __future__ import annotations

import os
import time

from absl import flags

from mrgan_tf import cli
from mrgan_tf.evaluation.dose.config import FLAGS as CONFIG_FLAGS
from mrgan_tf.evaluation.dose.config import DoseConfig
from mrgan_tf.evaluation.dose.errors import DoseError
from mrgan_tf.evaluation.dose.structures import parse_oars
from mrgan_tf.io.volumes import Volume
from tfrecords_tools.atomic import atomic_folder, check_folder_path

VOLUME_SUFFIXES = {"nifti": ".nii.gz", "mha": ".mha"}


def read_masks(reference: Volume, mask: str | None, target: str | None, oars: dict[str, str],
               rtstruct: str | None) -> tuple[Volume | None, Volume | None, dict[str, Volume]]:
    """Body, target and organ-at-risk masks: files, or with ``rtstruct`` ROI names of it (a name that is not a file)."""
    from mrgan_tf.io.readers import read_volume

    wanted = {"body": mask, "target": target, **{f"oar:{k}": v for k, v in oars.items()}}
    rois = {k: v for k, v in wanted.items() if v and rtstruct and not os.path.exists(v)}
    masks = {}
    if rois:
        from mrgan_tf.io.rtstruct import read_rtstruct

        filled = read_rtstruct(rtstruct, sorted(set(rois.values())), reference)
        masks = {k: Volume(filled[v], reference.affine, f"{rtstruct} ROI {v!r}") for k, v in rois.items()}
    for k, v in wanted.items():
        if v and k not in masks:
            masks[k] = read_volume(v)
    return masks.get("body"), masks.get("target"), {k[4:]: v for k, v in masks.items() if k.startswith("oar:")}


def write_outputs(folder: str, result, volume_format: str = "nifti", elapsed: float | None = None) -> list[str]:
    """Every output file into ``folder`` (empty): report, pictures, dose volumes, RT Doses of DICOM CTs."""
    from pydicom.uid import generate_uid

    from mrgan_tf.evaluation.dose import figures, report
    from mrgan_tf.io.rtdose import write_rtdose
    from mrgan_tf.io.writers import write_nifti, write_sitk
    from tfrecords_tools.atomic import atomic_write_text

    grid, cfg = result.grid, result.config
    files, written = [], {}
    doses = {m: (r.reference, r.synthetic) for m, r in result.plans.items()}
    for modality, (ref, syn) in doses.items():
        plan_uid = generate_uid()
        for which, dose, ct in (("reference", ref, result.cts.reference), ("synthetic", syn, result.cts.synthetic)):
            path = os.path.join(folder, f"dose_{modality}_{which}{VOLUME_SUFFIXES[volume_format]}")
            (write_nifti if volume_format == "nifti" else write_sitk)(grid.with_data(dose), path)   # float32 Gy
            files.append(path)
            if ct.header is not None and "FrameOfReferenceUID" in ct.header:
                path = os.path.join(folder, f"rtdose_{modality}_{which}.dcm")
                info = write_rtdose(grid.with_data(dose), path, ct.header, plan_uid,
                                    f"{modality} dose on the {which} CT", report.NOT_CLINICAL, modality == "photons")
                written[f"{modality}_{which}"] = info
                files.append(path)
    files.append(figures.dose_difference_png(os.path.join(folder, "dose_difference.png"), result.cts.reference.data,
                                             doses, result.structures.target, cfg.prescription_gy))
    files.append(figures.dvh_png(os.path.join(folder, "dvh.png"), doses, result.structures.regions(),
                                 cfg.prescription_gy))
    extra = {"rtdose": written, "seconds_total": None if elapsed is None else round(elapsed, 1),
             "files": [os.path.basename(f) for f in files] + ["dose.json", "dose.md"]}
    atomic_write_text(os.path.join(folder, "dose.md"), report.report_markdown(result))
    atomic_write_text(os.path.join(folder, "dose.json"), report.report_json(result, extra))
    return files + [os.path.join(folder, "dose.md"), os.path.join(folder, "dose.json")]


def run_dose(ct: str, sct: str, out: str, mask: str | None = None, target: str | None = None,
             oars: dict[str, str] | None = None, rtstruct: str | None = None, config: DoseConfig = DoseConfig(),
             volume_format: str = "nifti", overwrite: bool = False, progress: bool = True, verbose: bool = False):
    """Read, check, write ``out``; returns (result, markdown, files)."""
    from mrgan_tf.evaluation.dose import report
    from mrgan_tf.evaluation.dose.check import dose_check
    from mrgan_tf.evaluation.dose.engine import require_engine
    from mrgan_tf.io.readers import read_volume

    out = check_folder_path(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise DoseError(f"{out}: output folder exists and is not empty (use --overwrite to replace it)")
    if rtstruct and not os.path.isfile(rtstruct):
        raise DoseError(f"{rtstruct}: no such RT Structure Set file")
    require_engine()   # before reading anything: the missing extra is the first thing to fix
    t0 = time.perf_counter()
    reference, synthetic = read_volume(ct), read_volume(sct)
    body, target_vol, oar_vols = read_masks(reference, mask, target, oars or {}, rtstruct)
    result = dose_check(reference, synthetic, body, target_vol, oar_vols, config, progress, verbose)
    with atomic_folder(out) as tmp:
        files = write_outputs(tmp, result, volume_format, time.perf_counter() - t0)
    return result, report.report_markdown(result), [os.path.join(out, os.path.basename(f)) for f in files]


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program (importers' flags never collide)."""
    flags.DEFINE_string("ct", None, "Reference CT in HU: NIfTI, .mha/.nrrd or a DICOM folder.", flag_values=fv)
    flags.DEFINE_string("sct", None, "Synthetic CT in HU (any grid overlapping the reference's).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder for dose.md/.json, pictures and dose volumes.", flag_values=fv)
    flags.DEFINE_string("mask", None, "Body mask file, or an ROI name of --rtstruct (default: the CT above -500 HU).",
                        flag_values=fv)
    flags.DEFINE_string("target", None, "Target mask file, or an ROI name of --rtstruct (default: a synthetic "
                        "comparison target, a sphere in the brain placed from the body mask).", flag_values=fv)
    flags.DEFINE_multi_string("oar", None, "Organ at risk: NAME=FILE or NAME=ROI (with --rtstruct); repeat.",
                              flag_values=fv)
    flags.DEFINE_string("rtstruct", None, "DICOM RT Structure Set on the reference CT, for ROI names in --mask, "
                        "--target and --oar.", flag_values=fv)
    flags.DEFINE_enum("volume_format", "nifti", list(VOLUME_SUFFIXES), "Format of the dose volumes written.",
                      flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output folder.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Progress bar of the plan, recompute and scoring steps.", flag_values=fv)
    cli.define_field_flags(fv, DoseConfig, CONFIG_FLAGS)


def main(argv):
    fv = flags.FLAGS
    cli.require_flags(fv, "ct", "sct", "out")
    with cli.user_errors("dose"):
        config = DoseConfig(**cli.field_values(fv, CONFIG_FLAGS, DoseConfig))
        _, markdown, files = run_dose(fv.ct, fv.sct, fv.out, fv.mask, fv.target, parse_oars(fv.oar), fv.rtstruct,
                                      config, fv.volume_format, fv.overwrite, fv.progress, fv.verbose)
    print(markdown)
    print(f"wrote {len(files)} files to {fv.out}")
    return 0


run = cli.entry_point(define_flags, main, tool="dose")
