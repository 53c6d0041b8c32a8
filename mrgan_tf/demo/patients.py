"""Simulated patients: a base anatomy deformed, its CT and MR simulated, the pair misaligned."""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from mrgan_tf.demo.anatomy import AIR, BONE, CRANIUM_INV3, TEST_BASE, BaseSubject, colin27, cranium_ct, mni152
from mrgan_tf.demo.geometry import (about, crop_to_mask, fill_holes, largest_component, random_direction,
                                    random_rotation, smooth_field)

# Mean HU and the amplitude of a smooth per-patient variation around it.
HU_MEAN = np.array([-1000, 40, -90, 1100, 15, 40, 25, -1000], dtype=np.float32)
HU_VARIATION = np.array([0, 10, 15, 250, 4, 4, 4, 0], dtype=np.float32)


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


@dataclasses.dataclass
class Deformation:
    """Patient world -> base world: inverse random affine plus a smooth displacement (mm)."""

    to_base: np.ndarray  # 4x4
    field: np.ndarray  # (3, *grid.shape) displacement in mm, added in base world


def _random_deformation(rng: np.random.Generator, grid: Grid) -> Deformation:
    """Rotation <= 8 deg, per-axis scale 0.9-1.1, shift <= 4 mm, smooth warp of ~2.5 mm."""
    linear = random_rotation(rng, 0.0, 8.0) @ np.diag(rng.uniform(0.9, 1.1, 3))
    forward = about(grid.center, linear, rng.uniform(-4, 4, 3))
    field = 2.5 * np.stack([smooth_field(rng, grid.shape, 5) for _ in range(3)])
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
    soft, bone = (smooth_field(rng, labels.shape, 4) for _ in range(2))
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
    signal = t1 * gain * np.exp(0.2 * smooth_field(rng, t1.shape, 3))
    sigma = rng.uniform(0.015, 0.03) * gain
    real = signal + rng.normal(0, sigma, t1.shape)
    imag = rng.normal(0, sigma, t1.shape)
    return np.rint(np.hypot(real, imag)).astype(np.float32)  # integers compress well


def _body_mask(labels: np.ndarray) -> np.ndarray:
    return fill_holes(largest_component(labels != AIR)).astype(np.uint8)


def _misalignment(rng: np.random.Generator, center: np.ndarray) -> tuple[np.ndarray, dict]:
    """A rigid 1-3 deg / 1-3 mm world transform for the MR of a paired patient, and its record."""
    rot = random_rotation(rng, 1.0, 3.0)
    shift = random_direction(rng, 1.0, 3.0)
    matrix = about(center, rot, shift)
    record = {
        "rotation_deg": round(float(np.rad2deg(Rotation.from_matrix(rot).magnitude())), 3),
        "translation_mm": round(float(np.linalg.norm(shift)), 3),
        "mr_from_ct_world": np.round(matrix, 6).tolist(),
    }
    return matrix, record


MANIFEST = "demo_manifest.csv"   # one PlannedPatient per row
MANIFEST_COLUMNS = ("patient_id", "role", "split", "base_subject")


@dataclasses.dataclass
class PlannedPatient:
    patient_id: str
    role: str  # paired | ct | mr
    split: str  # train | test
    base_subject: str  # colin27 | mni152 | cranium


def plan_patients(n_paired_train, n_paired_test, n_unpaired_ct, n_unpaired_mr, train_base, with_cranium):
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
        ct, mask, affine = cranium_ct(spacing)
        record["source"] = f"real CT {CRANIUM_INV3} (HU kept, resampled)"
        return {"ct": (ct, np.int16), "mask": (mask, np.uint8)}, affine, record

    base = colin27(work) if p.base_subject == "colin27" else mni152(work)
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
    cropped, affine = crop_to_mask([arrays[n][0] for n in names], mask, grid.affine, 10.0)
    return {n: (a, arrays[n][1]) for n, a in zip(names, cropped)}, affine, record

