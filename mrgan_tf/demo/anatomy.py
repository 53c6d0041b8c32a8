"""The real anatomies the demo set starts from: Colin27, MNI152 (with a drawn skull) and the Cranium CT."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from mrgan_tf.demo.geometry import crop_to_mask, fill_holes, largest_component, resample_axes, smooth_field
from mrgan_tf.io.invesalius import read_inv3

MRICRON_DIR = Path("/usr/share/mricron/templates")
CRANIUM_INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
TRAIN_BASE, TEST_BASE = "colin27", "mni152"


# Tissue classes shared by the segmentations and the CT simulator.
AIR, SOFT, FAT, BONE, CSF, GM, WM, CAVITY = range(8)
# T1 signal (white matter = 1) used for tissue layers drawn around MNI152.
SYNTH_T1 = np.array([0.0, 0.55, 0.95, 0.08, 0.25, 0.65, 1.0, 0.0], dtype=np.float32)


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
def colin27(spacing: float) -> BaseSubject:
    """Colin27 T1 with its real skull: head, brain (ch2bet) and the dark T1 band between them."""
    t1, affine = _load_nifti(MRICRON_DIR / "ch2.nii.gz")
    bet, bet_affine = _load_nifti(MRICRON_DIR / "ch2bet.nii.gz")
    t1, affine = resample_axes(t1, affine, spacing, order=1)
    bet, _ = resample_axes((bet > 0).astype(np.float32), bet_affine, spacing, order=1)
    # ch2bet has streaks at its edge: smooth the mask, keep one filled blob.
    brain = largest_component(ndi.binary_fill_holes(ndi.gaussian_filter(bet, 1.5 / spacing) > 0.5))
    labels = np.zeros(t1.shape, np.uint8)
    t1 = t1 / _brain_classes(t1, brain, labels)

    head = fill_holes(largest_component(ndi.binary_closing(t1 > 0.06, iterations=2)))
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
def mni152(spacing: float) -> BaseSubject:
    """MNI152 2009 brain (nilearn) wrapped in a synthetic CSF/skull/scalp shell."""
    from nilearn import datasets

    def load(img):
        img = nib.as_closest_canonical(img)
        return resample_axes(img.get_fdata(dtype=np.float32), img.affine, spacing, 1)

    t1, affine = load(datasets.load_mni152_template())
    gm, _ = load(datasets.load_mni152_gm_template())
    wm, _ = load(datasets.load_mni152_wm_template())
    mask, _ = load(datasets.load_mni152_brain_mask())
    # Pad so that the shell (up to ~17 mm) fits inside the grid.
    pad = int(np.ceil(20 / spacing))
    t1, gm, wm, mask = (np.pad(a, pad) for a in (t1, gm, wm, mask))
    affine = affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)

    brain = largest_component(ndi.binary_fill_holes(mask > 0.5))
    labels = np.zeros(t1.shape, np.uint8)
    labels[brain] = np.where(gm[brain] + wm[brain] < 0.5, CSF, np.where(gm[brain] >= wm[brain], GM, WM))
    wm_level = float(np.median(t1[labels == WM]))

    dist = ndi.distance_transform_edt(~brain, sampling=spacing)
    thickness = 6.5 + 1.5 * smooth_field(np.random.default_rng(152), t1.shape)  # 5-8 mm skull
    layers = [(2.0, CSF), (2.0 + thickness, BONE), (5.0 + thickness, SOFT), (8.0 + thickness, FAT)]
    inner = 0.0
    for outer, cls in layers:
        labels[~brain & (dist > inner) & (dist <= outer)] = cls
        inner = outer
    synth = ndi.gaussian_filter(SYNTH_T1[labels], 1.0 / spacing)
    t1 = np.where(brain, t1 / wm_level, synth).astype(np.float32)
    return BaseSubject("mni152", t1, labels, affine, "synthetic shell")


def debian_available() -> bool:
    return all((MRICRON_DIR / f).is_file() for f in ("ch2.nii.gz", "ch2bet.nii.gz"))


@functools.lru_cache(maxsize=2)
def cranium_ct(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real Cranium CT cropped to the head and resampled to `spacing`: (HU int16, mask, affine)."""
    vol = read_inv3(CRANIUM_INV3)
    # Opening detaches the thin headrest arc; the head is the largest blob left.
    body = largest_component(ndi.binary_opening(vol.data > -500, iterations=2))
    (data, body), affine = crop_to_mask([vol.data, body.astype(np.float32)], body, vol.affine, 8.0)
    data, new_affine = resample_axes(data, affine, spacing, order=1)
    body, _ = resample_axes(body, affine, spacing, order=1)
    mask = fill_holes(body > 0.5).astype(np.uint8)
    return np.rint(data).astype(np.int16), mask, new_affine

