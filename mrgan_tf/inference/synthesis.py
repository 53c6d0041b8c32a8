"""Whole-volume synthesis: a volume in, the synthetic volume on the same grid out (no files).

``prepare_patient`` cuts the input into the model's slices, the predictor maps them, and
``restack_to_grid`` puts them back on the input grid in output units (HU for a synthetic CT).
"""
from __future__ import annotations

import time

import numpy as np
from absl import logging

from mrgan_tf.inference.predictors import FUSIONS, INPUT_MODALITY, Fusion, Predictor, SynthesisError
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.preprocess import prepare_patient, restack_to_grid
from mrgan_tf.preprocess.context import depth_problem
from mrgan_tf.preprocess.intensity import ct_from_unit, denormalise_mr, dequantise
from mrgan_tf.preprocess.plausibility import ImplausibleInput, check_volume, raise_or_warn, split

AIR_HU = -1024.0
CT_LIKE_HU = (-1100.0, 4000.0)   # plausible HU range of a CT


def ct_like_warning(vol: Volume) -> str | None:
    """A warning when ``vol`` does not look like a CT in HU (None when it does)."""
    lo, hi = float(vol.data.min()), float(vol.data.max())
    if lo < CT_LIKE_HU[0] or hi > CT_LIKE_HU[1] or hi < 100.0:
        return (f"{vol.source}: values {lo:.0f}..{hi:.0f} do not look like a CT in HU (expected within "
                f"{CT_LIKE_HU[0]:.0f}..{CT_LIKE_HU[1]:.0f} with a max >= 100); synthesizing anyway")
    return None


def refuse_implausible(vol: Volume, modality: str, accept: tuple[str, ...] = ()) -> None:
    """Raise ``ImplausibleInput`` for an input problem not accepted (the CLI's check before a model loads)."""
    errors, _ = split(check_volume(vol, modality), ("unsigned_ct", *accept))
    if errors:
        raise ImplausibleInput(errors)


def prepare_input(predictor: Predictor, vol: Volume, accept: tuple[str, ...] = ()):
    """``prepare_patient`` for the model's input modality; returns (prepared, (Z, S, S) stack on 0..1).

    An implausible input (a CT given as the MR, a constant volume) is an error unless its kind
    is in ``accept``; an unsigned CT is always only a warning here."""
    raise_or_warn(check_volume(vol, INPUT_MODALITY[predictor.name]), accept=("unsigned_ct", *accept))
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


NO_SPREAD = ("none written: one model without test-time augmentation makes one prediction, so there is no "
             "spread to measure (give several --model, or --tta)")
SPREAD_IS = ("per-voxel population standard deviation (ddof=0) across the fused predictions (models x test-time "
             "augmented copies), in the output's units: how much the predictions disagree, not an error bound")


def synthesize_volume(predictor: Predictor | Fusion, vol: Volume, batch_size: int = 16, progress: bool = False,
                      mr_range: tuple[float, float] | None = None, accept: tuple[str, ...] = ()
                      ) -> tuple[Volume, dict]:
    """``synthesize_with_spread`` without the spread: (the synthetic volume, info)."""
    out, _, info = synthesize_with_spread(predictor, vol, batch_size, progress, mr_range, accept)
    return out, info


def synthesize_with_spread(predictor: Predictor | Fusion, vol: Volume, batch_size: int = 16,
                           progress: bool = False, mr_range: tuple[float, float] | None = None,
                           accept: tuple[str, ...] = ()) -> tuple[Volume, Volume | None, dict]:
    """Synthesize every slice of ``vol`` (in the model's plane; for a ``Fusion``, each member's
    and each augmented copy's, mapped back and fused); returns the volume on ``vol``'s grid, the
    per-voxel spread of the fused predictions on the same grid (None for one prediction), and an
    info dict.

    A synthetic CT comes back as int16 HU; a synthetic MR as float32 on 0-255 or, with
    ``mr_range``, in the reference's units; the spread as float32 in the same units. The info
    dict holds timings, the units, how much of the body fell outside the model's canvas, and
    what the uncertainty is.

    Args:
        predictor: the model (``load_predictor``: a SavedModel export or a run's checkpoint), or a ``Fusion``.
        vol: the input volume (CT for ct2mr, MR for mr2ct), any orientation and spacing.
        batch_size: slices per model call.
        progress: show a progress bar.
        mr_range: a reference MR's robust (lo, hi) range: the synthetic MR comes out in its units.
        accept: input problem kinds to use anyway (``prepare_input``).
    """
    from mrgan_tf.inference.tta import Identity, predict_augmented

    fused = isinstance(predictor, Fusion)
    members = predictor.members if fused else (predictor,)
    transforms = predictor.transforms if fused else (Identity(),)
    seconds = dict.fromkeys(("prepare_s", "model_s", "restack_s"), 0.0)
    volumes, slices, lost = [], 0, None
    for member in members:
        t0 = time.perf_counter()
        prep, stack01 = prepare_input(member, vol, accept)
        t1 = time.perf_counter()
        outs01 = predict_augmented(member, stack01, transforms, batch_size, progress)
        t2 = time.perf_counter()
        for out01 in outs01:
            values, fill = to_output_units(member, out01, mr_range)
            volumes.append(restack_to_grid(values, prep.geometry, vol, order=1, fill=fill))
        for key, dt in zip(seconds, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
            seconds[key] += dt
        slices += int(len(stack01)) * len(transforms)
        problem = prep.body_loss_problem(member.preprocess, vol.source)
        if problem:
            logging.warning("%s; those voxels get the fill value", problem)
        if lost is None or prep.body_lost_fraction > lost.body_lost_fraction:
            lost = prep
    out, spread = volumes[0], None
    if len(volumes) > 1:
        t0 = time.perf_counter()
        stack = np.stack([v.data for v in volumes])
        spread = Volume(stack.std(axis=0, dtype=np.float64).astype(np.float32), out.affine, out.source)
        out = Volume(FUSIONS[predictor.method](stack, axis=0).astype(np.float32), out.affine, out.source)
        seconds["restack_s"] += time.perf_counter() - t0
    if predictor.name == "mr2ct":
        out = Volume(np.rint(out.data).astype(np.int16), out.affine, out.source)
    info = {"slices": slices, **seconds, "total_s": sum(seconds.values()), "units": output_units(predictor, mr_range),
            "body_voxels_outside": lost.body_voxels_outside, "body_lost_fraction": round(lost.body_lost_fraction, 6),
            "uncertainty": SPREAD_IS if spread is not None else NO_SPREAD}
    if fused:
        info["fusion"] = predictor.describe()
    return out, spread, info


def reference_mr_range(path: str, predictor: Predictor) -> tuple[float, float]:
    """The robust (lo, hi) of a reference MR, as make_records computes it: its body, the model's percentiles."""
    from mrgan_tf.preprocess import body_mask_from_mr, mr_range
    if predictor.name != "ct2mr":
        raise SynthesisError(f"--mr_reference={path}: only a synthetic MR (ct2mr) has reference units")
    ref = read_volume(path)
    return mr_range(ref.data, body_mask_from_mr(ref.data), predictor.preprocess.mr_percentiles)
