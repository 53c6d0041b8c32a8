"""Build a small demo dataset in the SynthRAD2023 layout from anatomy shipped offline.

No paired head CT/MR exists offline, so the demo set mixes real and simulated data:

- real MR anatomy: Colin27 (Debian ``mricron-data``, T1 with skull) and the
  MNI152 2009 T1 template (PyPI ``nilearn``, skull-stripped);
- one real CT: Debian ``invesalius-examples``' ``Cranium.inv3`` (kept in HU);
- simulated: every other CT (HU assigned per tissue class segmented from the
  MR anatomy, then blurred and noised), the skull and scalp around MNI152, and
  per-patient deformations, MR bias fields, MR noise and CT/MR misalignment.

Test patients come from a base anatomy that no training patient uses, so the
test split measures generalisation to an unseen head, not to a new deformation.

    python -m mrgan_tf.demo_data --out DIR [--seed 0] [--size_scale 1.0]

``build_demo_dataset`` is the importable entry point.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from absl import flags
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from mrgan_tf import cli
from mrgan_tf.errors import UserError
from mrgan_tf.io.invesalius import read_inv3
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_nifti
from tfrecords_tools.atomic import swap_in_directory

log = logging.getLogger(__name__)

MRICRON_DIR = Path("/usr/share/mricron/templates")
CRANIUM_INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
BASE_SPACING_MM = 2.0  # output voxel size at size_scale 1 (divided by size_scale)
TRAIN_BASE, TEST_BASE = "colin27", "mni152"
MANIFEST = "demo_manifest.csv"
MANIFEST_COLUMNS = ("patient_id", "role", "split", "base_subject")

# Tissue classes shared by the segmentations and the CT simulator.
AIR, SOFT, FAT, BONE, CSF, GM, WM, CAVITY = range(8)
# Mean HU and the amplitude of a smooth per-patient variation around it.
HU_MEAN = np.array([-1000, 40, -90, 1100, 15, 40, 25, -1000], dtype=np.float32)
HU_VARIATION = np.array([0, 10, 15, 250, 4, 4, 4, 0], dtype=np.float32)
# T1 signal (white matter = 1) used for tissue layers drawn around MNI152.
SYNTH_T1 = np.array([0.0, 0.55, 0.95, 0.08, 0.25, 0.65, 1.0, 0.0], dtype=np.float32)


class DemoDataError(UserError, RuntimeError):
    """The demo set cannot be built (bad output folder, no source anatomy)."""


@dataclasses.dataclass
class BaseSubject:
    """One real anatomy on an axis-aligned RAS grid: T1 (WM = 1) and tissue labels."""

    name: str
    t1: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    skull: str  # "real (segmented from the T1)" or "synthetic shell"

    @property
    def spacing(self) -> float:
        return float(self.affine[0, 0])


# --------------------------------------------------------------------------- geometry helpers


def _resample_axes(data: np.ndarray, affine: np.ndarray, spacing: float, order: int):
    """Resample along the volume's own axes to `spacing` mm, Gaussian anti-aliasing first."""
    old = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factor = spacing / old
    if np.allclose(factor, 1.0):
        return data, affine
    shape = np.floor((np.array(data.shape) - 1) / factor).astype(int) + 1
    src = data.astype(np.float32)
    if order > 0:
        src = ndi.gaussian_filter(src, sigma=np.maximum(factor - 1, 0) / 2)  # as skimage.rescale
    out = ndi.affine_transform(src, factor, output_shape=tuple(shape), order=order, mode="nearest")
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * factor
    return out, new_affine


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    return lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """3-D fill plus a per-axial-slice fill, so airways open to the border count as body."""
    mask = ndi.binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndi.binary_fill_holes(mask[:, :, k])
    return mask


def _smooth_field(rng: np.random.Generator, shape, n_ctrl: int = 4) -> np.ndarray:
    """A smooth random field of roughly unit amplitude (cubic upsampling of a coarse grid)."""
    ctrl = rng.uniform(-1.0, 1.0, size=(n_ctrl,) * 3)
    return ndi.zoom(ctrl, np.array(shape) / n_ctrl, order=3, mode="nearest", grid_mode=True)[
        tuple(slice(0, s) for s in shape)].astype(np.float32)


def _random_rotation(rng: np.random.Generator, lo_deg: float, hi_deg: float) -> np.ndarray:
    """A 3x3 rotation by an angle in [lo, hi] degrees about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(np.deg2rad(rng.uniform(lo_deg, hi_deg)) * axis).as_matrix()


def _random_direction(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * rng.uniform(lo, hi)


def _about(center: np.ndarray, linear: np.ndarray, shift=np.zeros(3)) -> np.ndarray:
    """4x4 world transform x -> linear (x - center) + center + shift."""
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = center + shift - linear @ center
    return m


# --------------------------------------------------------------------------- base anatomies


def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asanyarray(img.dataobj).astype(np.float32), img.affine


def _brain_classes(t1: np.ndarray, brain: np.ndarray, labels: np.ndarray) -> float:
    """Label CSF/GM/WM inside `brain` by 3-class Otsu on the T1; return the WM level."""
    from skimage.filters import threshold_multiotsu

    lo, hi = threshold_multiotsu(t1[brain], classes=3)
    labels[brain] = np.where(t1[brain] < lo, CSF, np.where(t1[brain] < hi, GM, WM))
    return float(np.median(t1[brain & (t1 >= hi)]))


@functools.lru_cache(maxsize=4)
def _colin27(spacing: float) -> BaseSubject:
    """Colin27 T1 with its real skull: head, brain (ch2bet) and the dark T1 band between them."""
    t1, affine = _load_nifti(MRICRON_DIR / "ch2.nii.gz")
    bet, bet_affine = _load_nifti(MRICRON_DIR / "ch2bet.nii.gz")
    t1, affine = _resample_axes(t1, affine, spacing, order=1)
    bet, _ = _resample_axes((bet > 0).astype(np.float32), bet_affine, spacing, order=1)
    # ch2bet has streaks at its edge: smooth the mask, keep one filled blob.
    brain = _largest_component(ndi.binary_fill_holes(ndi.gaussian_filter(bet, 1.5 / spacing) > 0.5))
    labels = np.zeros(t1.shape, np.uint8)
    t1 = t1 / _brain_classes(t1, brain, labels)

    head = _fill_holes(_largest_component(ndi.binary_closing(t1 > 0.06, iterations=2)))
    dist = ndi.distance_transform_edt(~brain, sampling=spacing)
    outside = head & ~brain
    dark = t1 < 0.3
    labels[outside] = np.where(t1[outside] > 0.9, FAT, SOFT)
    labels[outside & dark & (dist <= 1.5)] = CSF
    # Skull: dark band within 14 mm of the brain, closed to take in the bright diploe.
    skull = outside & dark & (dist > 1.5) & (dist <= 14)
    skull = ndi.binary_closing(skull, structure=ndi.generate_binary_structure(3, 1),
                               iterations=max(1, round(2 / spacing))) & outside & (dist > 1.5)
    # Far from the brain, dark T1 is facial bone or air (sinuses, airways).
    far_dark = outside & dark & (dist > 14)
    labels[skull | (far_dark & (t1 >= 0.1))] = BONE
    labels[far_dark & (t1 < 0.1)] = CAVITY
    return BaseSubject("colin27", t1.astype(np.float32), labels, affine, "real (segmented from the T1)")


@functools.lru_cache(maxsize=4)
def _mni152(spacing: float) -> BaseSubject:
    """MNI152 2009 brain (nilearn) wrapped in a synthetic CSF/skull/scalp shell."""
    from nilearn import datasets

    def load(img):
        img = nib.as_closest_canonical(img)
        return _resample_axes(img.get_fdata(dtype=np.float32), img.affine, spacing, 1)

    t1, affine = load(datasets.load_mni152_template())
    gm, _ = load(datasets.load_mni152_gm_template())
    wm, _ = load(datasets.load_mni152_wm_template())
    mask, _ = load(datasets.load_mni152_brain_mask())
    # Pad so that the shell (up to ~17 mm) fits inside the grid.
    pad = int(np.ceil(20 / spacing))
    t1, gm, wm, mask = (np.pad(a, pad) for a in (t1, gm, wm, mask))
    affine = affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)

    brain = _largest_component(ndi.binary_fill_holes(mask > 0.5))
    labels = np.zeros(t1.shape, np.uint8)
    labels[brain] = np.where(gm[brain] + wm[brain] < 0.5, CSF, np.where(gm[brain] >= wm[brain], GM, WM))
    wm_level = float(np.median(t1[labels == WM]))

    dist = ndi.distance_transform_edt(~brain, sampling=spacing)
    thickness = 6.5 + 1.5 * _smooth_field(np.random.default_rng(152), t1.shape)  # 5-8 mm skull
    layers = [(2.0, CSF), (2.0 + thickness, BONE), (5.0 + thickness, SOFT), (8.0 + thickness, FAT)]
    inner = 0.0
    for outer, cls in layers:
        labels[~brain & (dist > inner) & (dist <= outer)] = cls
        inner = outer
    synth = ndi.gaussian_filter(SYNTH_T1[labels], 1.0 / spacing)
    t1 = np.where(brain, t1 / wm_level, synth).astype(np.float32)
    return BaseSubject("mni152", t1, labels, affine, "synthetic shell")


def _debian_available() -> bool:
    return all((MRICRON_DIR / f).is_file() for f in ("ch2.nii.gz", "ch2bet.nii.gz"))


@functools.lru_cache(maxsize=2)
def _cranium_ct(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real Cranium CT cropped to the head and resampled to `spacing`: (HU int16, mask, affine)."""
    vol = read_inv3(CRANIUM_INV3)
    # Opening detaches the thin headrest arc; the head is the largest blob left.
    body = _largest_component(ndi.binary_opening(vol.data > -500, iterations=2))
    (data, body), affine = _crop_to_mask([vol.data, body.astype(np.float32)], body, vol.affine, 8.0)
    data, new_affine = _resample_axes(data, affine, spacing, order=1)
    body, _ = _resample_axes(body, affine, spacing, order=1)
    mask = _fill_holes(body > 0.5).astype(np.uint8)
    return np.rint(data).astype(np.int16), mask, new_affine


# --------------------------------------------------------------------------- simulated patients


@dataclasses.dataclass
class Grid:
    """The output voxel grid of one patient (axis-aligned RAS)."""

    affine: np.ndarray
    shape: tuple[int, int, int]

    @property
    def center(self) -> np.ndarray:
        return self.affine[:3, :3] @ ((np.array(self.shape) - 1) / 2) + self.affine[:3, 3]


def _output_grid(base: BaseSubject, spacing: float) -> Grid:
    """A grid 10 % larger than the base's, so rotated/scaled heads stay inside it."""
    src = Grid(base.affine, base.labels.shape)
    shape = tuple(int(s) for s in np.ceil(np.array(src.shape) * base.spacing * 1.1 / spacing))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = src.center - spacing * (np.array(shape) - 1) / 2
    return Grid(affine, shape)


def _crop_to_mask(arrays, mask: np.ndarray, affine: np.ndarray, margin_mm: float):
    """Crop every array to the mask's bounding box plus a margin; shift the affine to match."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    idx = np.argwhere(mask)
    margin = np.ceil(margin_mm / spacing).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    new_affine = affine.copy()
    new_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return [a[box] for a in arrays], new_affine


@dataclasses.dataclass
class Deformation:
    """Patient world -> base world: inverse random affine plus a smooth displacement (mm)."""

    to_base: np.ndarray  # 4x4
    field: np.ndarray  # (3, *grid.shape) displacement in mm, added in base world


def _random_deformation(rng: np.random.Generator, grid: Grid) -> Deformation:
    """Rotation <= 8 deg, per-axis scale 0.9-1.1, shift <= 4 mm, smooth warp of ~2.5 mm."""
    linear = _random_rotation(rng, 0.0, 8.0) @ np.diag(rng.uniform(0.9, 1.1, 3))
    forward = _about(grid.center, linear, rng.uniform(-4, 4, 3))
    field = 2.5 * np.stack([_smooth_field(rng, grid.shape, 5) for _ in range(3)])
    return Deformation(np.linalg.inv(forward), field)


def _sample(base: BaseSubject, grid: Grid, deform: Deformation, moved: np.ndarray | None = None):
    """(labels, T1) of the deformed base on `grid`; `moved` (4x4) moves the anatomy rigidly first."""
    idx = np.indices(grid.shape, dtype=np.float64).reshape(3, -1)
    world = grid.affine[:3, :3] @ idx + grid.affine[:3, 3:]
    if moved is None:
        disp = deform.field.reshape(3, -1)
    else:  # the anatomy at x came from moved^-1(x): evaluate everything there
        back = np.linalg.inv(moved)
        world = back[:3, :3] @ world + back[:3, 3:]
        vox = np.linalg.solve(grid.affine, np.vstack([world, np.ones((1, world.shape[1]))]))[:3]
        disp = np.stack([ndi.map_coordinates(f, vox, order=1, mode="nearest") for f in deform.field])
    src = deform.to_base[:3, :3] @ world + deform.to_base[:3, 3:] + disp
    src_vox = np.linalg.solve(base.affine, np.vstack([src, np.ones((1, src.shape[1]))]))[:3]
    labels = ndi.map_coordinates(base.labels, src_vox, order=0, mode="constant", cval=AIR)
    t1 = ndi.map_coordinates(base.t1, src_vox, order=1, mode="constant", cval=0.0)
    return labels.reshape(grid.shape), t1.reshape(grid.shape).astype(np.float32)


def _simulate_ct(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """HU per tissue class with smooth variation, partial-volume blur and noise -> int16."""
    soft, bone = (_smooth_field(rng, labels.shape, 4) for _ in range(2))
    hu = HU_MEAN[labels] + HU_VARIATION[labels] * np.where(labels == BONE, bone, soft)
    hu += np.where(labels == BONE, rng.uniform(-200, 200), rng.uniform(-3, 3)).astype(np.float32)
    # Noise goes in before the partial-volume blur, so it comes out correlated and at
    # ~3-5 HU, like the real Cranium CT (~6 HU at 2 mm), instead of white.
    hu += rng.normal(0.0, rng.uniform(10, 20), labels.shape).astype(np.float32)
    hu = ndi.gaussian_filter(hu, 0.7)
    return np.rint(np.clip(hu, -1024, 3071)).astype(np.int16)


def _simulate_mr(rng: np.random.Generator, t1: np.ndarray) -> np.ndarray:
    """T1 with a smooth multiplicative bias field, scanner gain and Rician noise; integer-valued."""
    gain = rng.uniform(400, 700)
    signal = t1 * gain * np.exp(0.2 * _smooth_field(rng, t1.shape, 3))
    sigma = rng.uniform(0.015, 0.03) * gain
    real = signal + rng.normal(0, sigma, t1.shape)
    imag = rng.normal(0, sigma, t1.shape)
    return np.rint(np.hypot(real, imag)).astype(np.float32)  # integers compress well


def _body_mask(labels: np.ndarray) -> np.ndarray:
    return _fill_holes(_largest_component(labels != AIR)).astype(np.uint8)


def _misalignment(rng: np.random.Generator, center: np.ndarray) -> tuple[np.ndarray, dict]:
    """A rigid 1-3 deg / 1-3 mm world transform for the MR of a paired patient, and its record."""
    rot = _random_rotation(rng, 1.0, 3.0)
    shift = _random_direction(rng, 1.0, 3.0)
    matrix = _about(center, rot, shift)
    record = {
        "rotation_deg": round(float(np.rad2deg(Rotation.from_matrix(rot).magnitude())), 3),
        "translation_mm": round(float(np.linalg.norm(shift)), 3),
        "mr_from_ct_world": np.round(matrix, 6).tolist(),
    }
    return matrix, record


# --------------------------------------------------------------------------- the data set


@dataclasses.dataclass
class PlannedPatient:
    patient_id: str
    role: str  # paired | ct | mr
    split: str  # train | test
    base_subject: str  # colin27 | mni152 | cranium


def _plan(n_paired_train, n_paired_test, n_unpaired_ct, n_unpaired_mr, train_base, with_cranium):
    plan = [PlannedPatient(f"pair_train_{i + 1:02d}", "paired", "train", train_base)
            for i in range(n_paired_train)]
    plan += [PlannedPatient(f"pair_test_{i + 1:02d}", "paired", "test", TEST_BASE)
             for i in range(n_paired_test)]
    plan += [PlannedPatient(f"ct_only_{i + 1:02d}", "ct", "train",
                            "cranium" if with_cranium and i == 0 else train_base)
             for i in range(n_unpaired_ct)]
    plan += [PlannedPatient(f"mr_only_{i + 1:02d}", "mr", "train", train_base)
             for i in range(n_unpaired_mr)]
    return plan


def make_patient(p: PlannedPatient, rng: np.random.Generator, spacing: float, work: float,
                  keep_labels: bool = False):
    """Arrays to write for one patient: {name: (array, dtype)}, affine, and a summary record.

    ``keep_labels`` adds the tissue labels on the CT's and the MR's anatomy ("labels",
    "mr_labels"; mrgan_tf.demo.tissue_contrast replays a patient for them; never written)."""
    record = {"role": p.role, "split": p.split, "base_subject": p.base_subject}
    if p.base_subject == "cranium":
        ct, mask, affine = _cranium_ct(spacing)
        record["source"] = f"real CT {CRANIUM_INV3} (HU kept, resampled)"
        return {"ct": (ct, np.int16), "mask": (mask, np.uint8)}, affine, record

    base = _colin27(work) if p.base_subject == "colin27" else _mni152(work)
    grid = _output_grid(base, spacing)
    deform = _random_deformation(rng, grid)
    labels, t1 = _sample(base, grid, deform)
    mask = _body_mask(labels)
    arrays = {"mask": (mask, np.uint8), **({"labels": (labels, np.uint8)} if keep_labels else {})}
    record["source"] = f"{base.name} anatomy, randomly deformed; skull {base.skull}"
    if p.role in ("paired", "ct"):
        arrays["ct"] = (_simulate_ct(rng, labels), np.int16)
    if p.role == "paired":
        moved, record["misalignment"] = _misalignment(rng, grid.center)
        mr_labels, t1 = _sample(base, grid, deform, moved)
    if keep_labels and p.role in ("paired", "mr"):
        arrays["mr_labels"] = (mr_labels if p.role == "paired" else labels, np.uint8)
    if p.role in ("paired", "mr"):
        arrays["mr"] = (_simulate_mr(rng, t1), np.float32)
    names = list(arrays)
    cropped, affine = _crop_to_mask([arrays[n][0] for n in names], mask, grid.affine, 10.0)
    return {n: (a, arrays[n][1]) for n, a in zip(names, cropped)}, affine, record


def _readme(summary: dict) -> str:
    """README.txt: exactly what in this folder is real and what is simulated."""
    lines = [
        "mrgan-tf demo data set (SynthRAD2023 Task 1 layout: <patient>/ct.nii.gz, mr.nii.gz, mask.nii.gz)",
        f"Built by `python -m mrgan_tf.demo_data` with seed {summary['seed']}, "
        f"size_scale {summary['size_scale']}, voxel size {summary['spacing_mm']:g} mm.",
        "demo_manifest.csv lists every patient's role, split and base anatomy; demo_summary.json",
        "holds the per-patient details (including each paired patient's CT/MR misalignment).",
        "",
        "NOT FOR CLINICAL OR RESEARCH CONCLUSIONS. No real paired CT/MR of one head is in this folder.",
        "",
        "REAL:",
    ]
    bases = set(summary["train_bases"]) | set(summary["test_bases"])
    if "colin27" in bases:
        lines += ["- MR anatomy and T1 contrast of Colin27: single-subject T1 with skull (Debian",
                  "  mricron-data ch2.nii.gz; brain mask from ch2bet.nii.gz)."]
    if "mni152" in bases:
        lines += ["- MR anatomy and T1 contrast of the MNI152 2009 T1 template (nilearn; an average of",
                  "  152 brains, skull-stripped)."]
    if "cranium" in bases:
        lines += ["- The ct_only patient with base_subject 'cranium': a real head CT (Debian",
                  "  invesalius-examples Cranium.inv3) in its real HU, cropped to the head and",
                  "  resampled (a headrest arc is visible)."]
    lines += [
        "",
        "SIMULATED:",
        "- Every other CT: tissue classes segmented from the MR anatomy (air, soft tissue, fat,",
        "  skull, CSF, grey and white matter, air cavities) get typical HU (-1000, 40, -90,",
        "  ~1100 +/- 250, 15, 40, 25, -1000), smooth per-patient variation, 10-20 HU Gaussian",
        "  noise and a 0.7-voxel Gaussian partial-volume blur (which leaves ~3-5 HU of correlated",
        "  noise, close to the real Cranium CT). Colin27's skull is the dark T1 band between",
        "  brain and scalp, so it is approximate (sinuses near the brain count as bone).",
        "- MNI152 has no skull: a synthetic CSF/skull (5-8 mm)/muscle/fat shell is drawn around",
        "  its brain for both the CT and the MR.",
        "- Each patient is its base anatomy under a random affine (rotation <= 8 deg, scale",
        "  0.9-1.1, shift <= 4 mm) and a smooth ~2.5 mm warp; patients of one base are NOT",
        "  independent people.",
        "- MR: smooth multiplicative bias field, random gain and Rician noise.",
        "- Paired MR are rigidly misaligned from their CT by 1-3 deg and 1-3 mm on purpose.",
        "- mask.nii.gz: body outline (holes filled), from the CT for paired patients.",
        "",
        f"Test patients use base anatomy {sorted(summary['test_bases'])}; training patients use "
        f"{sorted(summary['train_bases'])}.",
    ]
    if summary["warnings"]:
        lines += ["", "WARNINGS:"] + [f"- {w}" for w in summary["warnings"]]
    return "\n".join(lines) + "\n"


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DemoDataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DemoDataError(f"{out}: directory is not empty (pass --overwrite to replace it)")


def build_demo_dataset(out_dir, seed: int = 0, n_paired_train: int = 4, n_paired_test: int = 2,
                       n_unpaired_ct: int = 3, n_unpaired_mr: int = 3, size_scale: float = 1.0,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Write the demo set to `out_dir` (atomically) and return its summary dict."""
    out = Path(out_dir)
    counts = dict(n_paired_train=n_paired_train, n_paired_test=n_paired_test,
                  n_unpaired_ct=n_unpaired_ct, n_unpaired_mr=n_unpaired_mr)
    for name, n in counts.items():
        if n < 0:
            raise DemoDataError(f"{out}: {name} must be >= 0, got {n}")
    if not 0.1 <= size_scale <= 2.0:
        raise DemoDataError(f"{out}: size_scale must be in [0.1, 2], got {size_scale}")
    _check_out_dir(out, overwrite)

    spacing = BASE_SPACING_MM / size_scale
    work = max(1.0, spacing / 2)  # segment the bases at half the output voxel size
    warnings = []
    train_base = TRAIN_BASE
    if not _debian_available():
        train_base = TEST_BASE
        warnings.append(f"Debian mricron-data not found in {MRICRON_DIR}: only MNI152 (nilearn) is used, "
                        "so test patients share their base anatomy with training patients")
    with_cranium = CRANIUM_INV3.is_file()
    if not with_cranium and n_unpaired_ct:
        warnings.append(f"{CRANIUM_INV3} not found: every unpaired CT is simulated")
    for w in warnings:
        log.warning(w)

    plan = _plan(n_paired_train, n_paired_test, n_unpaired_ct, n_unpaired_mr, train_base, with_cranium)
    summary = {
        "out_dir": str(out), "seed": seed, "size_scale": size_scale, "spacing_mm": spacing,
        **counts, "warnings": warnings, "patients": {},
        "train_bases": sorted({p.base_subject for p in plan if p.split == "train"}),
        "test_bases": sorted({p.base_subject for p in plan if p.split == "test"}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for index, p in enumerate(tqdm(plan, desc="demo patients", unit="patient", disable=not progress)):
            rng = np.random.default_rng([seed, index])
            arrays, affine, record = make_patient(p, rng, spacing, work)
            for name, (data, dtype) in arrays.items():
                write_nifti(Volume(data, affine, f"demo:{p.patient_id}"), tmp / p.patient_id / f"{name}.nii.gz",
                            dtype=dtype)
            record["shape"] = list(arrays["mask"][0].shape)
            summary["patients"][p.patient_id] = record
        with open(tmp / MANIFEST, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows([dataclasses.astuple(p) for p in plan])
        summary["total_bytes"] = sum(f.stat().st_size for f in tmp.rglob("*.nii.gz"))
        (tmp / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "README.txt").write_text(_readme(summary))
        swap_in_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


# --------------------------------------------------------------------------- CLI

def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program, so that other CLIs (e.g. the end-to-end demo) can
    import build_demo_dataset and define their own --out/--seed."""
    flags.DEFINE_string("out", None, "Output folder (must be empty or absent unless --overwrite).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives identical arrays.", flag_values=fv)
    flags.DEFINE_integer("n_paired_train", 4, "Paired CT/MR training patients.", flag_values=fv)
    flags.DEFINE_integer("n_paired_test", 2, "Paired CT/MR test patients (base anatomy unseen in training).",
                         flag_values=fv)
    flags.DEFINE_integer("n_unpaired_ct", 3, "CT-only training patients (the first is the real Cranium CT).",
                         flag_values=fv)
    flags.DEFINE_integer("n_unpaired_mr", 3, "MR-only training patients.", flag_values=fv)
    flags.DEFINE_float("size_scale", 1.0, "Resolution factor: voxel size is 2 mm / size_scale.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out folder.", flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)


def main(argv):
    fv = flags.FLAGS
    with cli.user_errors("demo_data"):
        summary = build_demo_dataset(fv.out, fv.seed, fv.n_paired_train, fv.n_paired_test, fv.n_unpaired_ct,
                                     fv.n_unpaired_mr, fv.size_scale, fv.overwrite)
    print(f"wrote {len(summary['patients'])} patients ({summary['total_bytes'] / 1e6:.1f} MB) to {fv.out}")
    return 0


run = cli.entry_point(define_flags, main)
