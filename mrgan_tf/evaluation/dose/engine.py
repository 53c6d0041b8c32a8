"""pyRadPlan behind three calls: ``require_engine``, ``make_plan`` (optimised on the reference) and ``recompute``.

pyRadPlan (matRad's Python port) works on SimpleITK images in LPS with an identity direction. The
planning grid is canonical RAS+, so its first two axes are reversed on the way in and out; an
oblique grid is planned along its own axes (beam angles are relative to them). A structure set
is tied to the CT it was built on (pyRadPlan refuses another: "CT image mismatch"), so every CT
gets its own. The engine's progress bars and warnings are kept out of normal output.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import warnings

import numpy as np

from mrgan_tf.evaluation.dose.config import DoseConfig
from mrgan_tf.evaluation.dose.errors import DoseError
from mrgan_tf.evaluation.dose.structures import Structures
from mrgan_tf.io.volumes import LPS_TO_RAS, Volume

INSTALL = "pip install -e '.[dose]' && pip install --no-deps 'pyradplan==0.5.0'"
# Objective weights: the target at the prescription, the rest of the body kept below half of it.
TARGET_PRIORITY, BODY_PRIORITY, BODY_MAX_FRACTION = 1000.0, 100.0, 0.5


def require_engine() -> None:
    """A ``DoseError`` naming the optional extra and its install command when pyRadPlan or pymedphys is missing
    (found without importing them: a start-up check costs nothing)."""
    import importlib.util

    missing = [name for name in ("pyRadPlan", "pymedphys") if importlib.util.find_spec(name) is None]
    if missing:
        raise DoseError(f"the dose check needs the optional 'dose' extra ({', '.join(missing)} missing): {INSTALL}")


@contextlib.contextmanager
def quiet(verbose: bool = False):
    """The engine's console bars, prints, log warnings and numpy warnings (rays parallel to an axis) hidden
    unless ``verbose``."""
    if verbose:
        yield
        return
    from pyRadPlan.core._progress import ProgressReporter

    before = ProgressReporter.console_progress
    logger = logging.getLogger("pyRadPlan")   # "No engine specified ... using the first": expected here
    level = logger.level
    ProgressReporter.console_progress = False
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        ProgressReporter.console_progress = before
        logger.setLevel(level)


def to_engine(data: np.ndarray, grid: Volume):
    """A SimpleITK image of ``data`` (canonical grid ``grid``) in LPS with an identity direction."""
    import SimpleITK as sitk

    flipped = np.ascontiguousarray(np.asarray(data)[::-1, ::-1, :].transpose(2, 1, 0))
    img = sitk.GetImageFromArray(flipped)
    corner = LPS_TO_RAS @ grid.affine @ np.array([grid.shape[0] - 1, grid.shape[1] - 1, 0, 1.0])
    img.SetSpacing([float(s) for s in grid.spacing])
    img.SetOrigin([float(v) for v in corner[:3]])
    return img


def from_engine(img) -> np.ndarray:
    """Inverse of ``to_engine``: a canonical (i, j, k) float32 array."""
    import SimpleITK as sitk

    return np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0)[::-1, ::-1, :], np.float32)


def _ct_and_structures(hu: Volume, structures: Structures, prescription_gy: float):
    """pyRadPlan's CT and a structure set built on it (target, organs at risk, external)."""
    from pyRadPlan import CT, StructureSet
    from pyRadPlan.cst import OAR, ExternalVOI, Target
    from pyRadPlan.optimization.objectives import SquaredDeviation, SquaredOverdosing

    ct = CT(cube_hu=to_engine(hu.data.astype(np.float32), hu))

    def mask(m):
        img = to_engine(m.astype(np.uint8), hu)
        img.CopyInformation(ct.cube_hu)
        return img
    vois = [Target(name="target", mask=mask(structures.target), ct_image=ct,
                   objectives=[SquaredDeviation(priority=TARGET_PRIORITY, d_ref=prescription_gy)])]
    vois += [OAR(name=name, mask=mask(m), ct_image=ct, objectives=[]) for name, m in structures.oars.items()]
    vois.append(ExternalVOI(name="body", mask=mask(structures.body), ct_image=ct, objectives=[
        SquaredOverdosing(priority=BODY_PRIORITY, d_max=BODY_MAX_FRACTION * prescription_gy)]))
    return ct, StructureSet(vois=vois, ct_image=ct)


@dataclasses.dataclass
class Plan:
    """An optimised plan: what a recompute on another CT needs, and the reference dose (Gy, planning grid)."""

    modality: str
    pln: object
    stf: object
    weights: np.ndarray
    dose: np.ndarray
    beams: int
    beamlets: int
    seconds: float = 0.0   # wall time of making it


def make_plan(reference: Volume, structures: Structures, config: DoseConfig, modality: str,
              verbose: bool = False) -> Plan:
    """Optimise a ``modality`` plan ("photons"/"protons") on the reference CT; its dose on that CT."""
    require_engine()
    import pyRadPlan

    with quiet(verbose):
        pyRadPlan.settings.xp.prefer_gpu = False
        ct, cst = _ct_and_structures(reference, structures, config.prescription_gy)
        if modality == "photons":
            pln = pyRadPlan.PhotonPlan(machine="Generic")
        else:
            pln = pyRadPlan.IonPlan(radiation_mode="protons", machine="Generic")
        angles = [float(a) for a in config.angles(modality)]
        pln.prop_stf = {"gantry_angles": angles, "couch_angles": [0.0] * len(angles), "bixel_width": config.bixel_mm}
        r = config.resolution_mm
        pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": r, "y": r, "z": r}}}
        pln.prop_opt = {"solver": "scipy", "max_iter": config.iterations}
        pln.num_of_fractions = config.fractions
        pln.prescribed_dose = config.prescription_gy
        stf = pyRadPlan.generate_stf(ct, cst, pln)
        dij = pyRadPlan.calc_dose_influence(ct, cst, stf, pln)
        weights = np.asarray(pyRadPlan.fluence_optimization(ct, cst, stf, dij, pln))
        dose = from_engine(pyRadPlan.calc_dose_forward(ct, cst, stf, pln, weights)["physical_dose"])
    return Plan(modality, pln, stf, weights, dose, len(angles), int(weights.size))


def recompute(plan: Plan, ct_hu: Volume, structures: Structures, verbose: bool = False) -> np.ndarray:
    """The dose of ``plan`` (same beams, same weights) on another CT of the same grid (Gy)."""
    require_engine()
    import pyRadPlan

    with quiet(verbose):
        ct, cst = _ct_and_structures(ct_hu, structures, float(plan.pln.prescribed_dose))
        result = pyRadPlan.calc_dose_forward(ct, cst, plan.stf, plan.pln, plan.weights)
    return from_engine(result["physical_dose"])
