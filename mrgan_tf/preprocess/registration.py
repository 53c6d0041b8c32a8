"""Mutual-information registration of MR to CT with SimpleITK: rigid by default, or affine (paper Sec. II.A).

The paper used AFNI 3dAllineate, affine; ``model="affine"`` is that model (mutual information,
skull masked out of the CT for the metric) with ITK's Mattes MI, and ``register_affine`` says why
rigid is the default. Geometry stays in ``Volume`` terms (RAS+); the LPS conversion for SimpleITK
happens only here.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import numpy as np

from mrgan_tf.io.volumes import Volume

# RAS+ <-> LPS: flip the first two world axes (its own inverse).
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
MODELS = ("rigid", "affine")


@dataclasses.dataclass
class RegistrationResult:
    transform: np.ndarray  # 4x4 RAS+ world->world, maps fixed points to moving points
    metric: float          # final Mattes MI value (ITK sign: lower is better)
    iterations: int        # optimizer iterations over all resolution levels
    stop_reason: str


def to_sitk(vol: Volume, data: np.ndarray | None = None):
    """Volume (i, j, k data, RAS+ affine) -> SimpleITK image (z, y, x array, LPS geometry)."""
    import SimpleITK as sitk

    arr = vol.data if data is None else data
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0)))
    lps = _FLIP @ vol.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(o) for o in lps[:3, 3]])
    return img


def from_sitk(img, source: str = "<sitk>") -> Volume:
    """SimpleITK image -> Volume with a RAS+ affine."""
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return Volume(np.ascontiguousarray(data), _FLIP @ lps, source)


def _affine_to_matrix(tx) -> np.ndarray:
    """SimpleITK AffineTransform (LPS, x -> A(x - c) + c + t) -> 4x4 RAS+ matrix."""
    a = np.array(tx.GetMatrix()).reshape(3, 3)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = c + t - a @ c
    return _FLIP @ lps @ _FLIP


@contextlib.contextmanager
def _one_itk_thread() -> Iterator[None]:
    """ITK's registration on one thread: on two, the metric's partial sums meet in a varying order, so
    one pair registered twice differed (by up to 3e-4 in the matrix on a demo head; the synthetic-CT
    model trained on those records then scored differently from run to run). Deterministic, and about
    1.9x slower per pair; make_records registers its patients in parallel worker processes instead."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


@_one_itk_thread()    # a fresh context per call
def register_affine(fixed: Volume, moving: Volume, *, fixed_mask: np.ndarray | None = None,
                    moving_mask: np.ndarray | None = None, model: str = "rigid", iterations: int = 200,
                    seed: int = 0, sampling: float = 0.25) -> RegistrationResult:
    """Mutual-information registration of ``moving`` to ``fixed``; the result is a 4x4 affine.

    ``model="rigid"`` (6 dof) or ``"affine"`` (rigid first, then 12 dof, as the paper).
    Rigid is the default because Mattes MI on a head with much air around it rewards
    spurious scaling (on synthetic heads the affine stage drifted 1-10 % in scale while
    rigid was exact); for one patient's CT and MR the head is rigid anyway.
    ``fixed_mask`` / ``moving_mask`` (bool, on each grid) restrict the metric,
    e.g. body minus skull on the CT. The result maps fixed world points to moving
    world points, so ``preprocess.resample_like(moving, fixed, transform=result.transform)``
    is aligned.
    """
    if model not in MODELS:
        raise ValueError(f"registration model must be one of {MODELS}, got {model!r}")
    import SimpleITK as sitk

    f_img = to_sitk(fixed, np.asarray(fixed.data, np.float32))
    m_img = to_sitk(moving, np.asarray(moving.data, np.float32))

    # Centre-of-geometry start, rigid first (robust), then optionally the full affine.
    initial = sitk.CenteredTransformInitializer(
        f_img, m_img, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY)

    def run(transform, iters):
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed + 1)  # SimpleITK reads seed 0 as "wall clock"
        if fixed_mask is not None:
            reg.SetMetricFixedMask(to_sitk(fixed, np.asarray(fixed_mask, np.uint8)))
        if moving_mask is not None:
            reg.SetMetricMovingMask(to_sitk(moving, np.asarray(moving_mask, np.uint8)))
        reg.SetInterpolator(sitk.sitkBSpline)  # linear interpolation biases MI towards grid alignment
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-4, numberOfIterations=iters,
            relaxationFactor=0.7, gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        reg.SetSmoothingSigmasPerLevel([2, 1, 0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(transform, inPlace=True)
        count = [0]
        reg.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
        reg.Execute(f_img, m_img)
        return reg, count[0]

    rigid = sitk.Euler3DTransform(initial)
    n_affine = 0
    reg, n_rigid = run(rigid, iterations)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    if model == "affine":
        reg, n_affine = run(affine, iterations)
    return RegistrationResult(transform=_affine_to_matrix(affine), metric=float(reg.GetMetricValue()),
                              iterations=n_rigid + n_affine,
                              stop_reason=reg.GetOptimizerStopConditionDescription())
