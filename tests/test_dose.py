"""Dose check on a small phantom head: the same CT scores perfectly, known HU changes move the figures.

One plan per modality is made once for the module (5 mm grid, few beams, few iterations) and
recomputed on each changed CT, as ``plan_reference`` + ``check_synthetic`` are meant to be used.
"""
import numpy as np
import pytest

pytest.importorskip("pyRadPlan")
pytest.importorskip("pymedphys")

from mrgan_tf.evaluation.dose.check import _notes, check_synthetic, dose_check, plan_reference  # noqa: E402
from mrgan_tf.evaluation.dose.config import DoseConfig  # noqa: E402
from mrgan_tf.evaluation.dose.errors import DoseError  # noqa: E402
from mrgan_tf.evaluation.dose.inputs import planning_cts  # noqa: E402
from mrgan_tf.io.volumes import Volume, VolumeError  # noqa: E402

SPACING = 5.0
FAST = DoseConfig(resolution_mm=SPACING, photon_angles=(0.0, 120.0, 240.0), proton_angles=(0.0, 90.0),
                  bixel_mm=10.0, iterations=20, target_radius_mm=15.0)


def phantom(shape=(36, 40, 20)) -> tuple[Volume, np.ndarray]:
    """An elliptic cylinder "head" of water (40 HU) in a 7.5 mm bone shell (1000 HU), in air; and its bone."""
    i, j, k = np.indices(shape, np.float32)
    x, y = (i - (shape[0] - 1) / 2) * SPACING, (j - (shape[1] - 1) / 2) * SPACING
    r = np.sqrt((x / 75.0) ** 2 + (y / 85.0) ** 2)
    inside = (r < 1.0) & (k >= 2) & (k < shape[2] - 2)
    bone = inside & (r >= 0.9)
    hu = np.full(shape, -1000.0, np.float32)
    hu[inside] = 40.0
    hu[bone] = 1000.0
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = [-80.0, -100.0, -40.0]
    return Volume(hu, affine, "phantom.nii.gz"), bone


@pytest.fixture(scope="module")
def planned():
    ct, bone = phantom()
    return ct, bone, plan_reference(ct, config=FAST)


def test_the_same_ct_scores_zero_dose_error_and_full_gamma(planned):
    ct, _, ref = planned
    result = check_synthetic(ref, ct.with_data(ct.data.copy()))
    assert result.structures.synthetic_target and result.notes[-1].startswith("the target is a synthetic sphere")
    for modality, r in result.plans.items():
        assert r.reference.max() > 0.9 * FAST.prescription_gy, modality
        assert r.figures["mae_target"] == 0.0
        assert r.figures["gamma_2%/2mm"] == r.figures["gamma_1%/1mm"] == 100.0
        assert all(v == 0.0 for d in r.figures["dvh"].values() for v in d["difference"].values())
        target = r.figures["dvh"]["target"]["reference"]
        assert 0.85 * FAST.prescription_gy < target["D98"] <= target["D50"] <= target["D2"] < 1.15 * FAST.prescription_gy


def test_denser_tissue_shortens_the_protons_range_and_lowers_the_target_dose(planned):
    ct, _, ref = planned
    body = ct.data > -500
    result = check_synthetic(ref, ct.with_data(np.where(body, ct.data + 50.0, ct.data)))
    protons, photons = result.plans["protons"].figures, result.plans["photons"].figures
    assert protons["dvh"]["target"]["difference"]["D98"] < -1.0   # Gy: the distal edge falls short
    assert protons["mae_target"] > 0.01
    assert protons["gamma_2%/2mm"] < 100.0
    assert photons["dvh"]["target"]["difference"]["Dmean"] < 0      # more attenuation, a little less dose
    assert photons["mae_target"] < protons["mae_target"]


def test_bone_replaced_by_soft_tissue_moves_the_proton_dose(planned):
    ct, bone, ref = planned
    result = check_synthetic(ref, ct.with_data(np.where(bone, 40.0, ct.data)))
    protons = result.plans["protons"].figures
    assert protons["mae_target"] > 0.01 and protons["gamma_1%/1mm"] < 100.0
    assert result.plans["photons"].figures["dvh"]["target"]["difference"]["Dmean"] > 0   # less attenuation


def test_voxels_the_synthetic_ct_does_not_cover_are_air_and_counted(planned):
    ct, _, ref = planned
    half = Volume(ct.data[:, :, :10], ct.affine, "half.nii.gz")   # the lower half of the slices only
    cts = planning_cts(ref.reference, ref.clipped, half)
    assert cts.synthetic_covered[:, :, :10].all() and not cts.synthetic_covered[:, :, 10:].any()
    assert np.all(cts.synthetic.data[:, :, 10:] == -1024.0)
    assert np.array_equal(cts.synthetic.data[:, :, :10], ct.data[:, :, :10])
    missing = int((ref.structures.body[:, :, 10:]).sum())
    assert missing > 0 and any(n.startswith(f"{missing} body voxels of the planning grid lie outside the synthetic "
                                            "CT's field of view") for n in _notes(cts, ref.structures))


def test_hu_beyond_the_density_table_are_clipped_and_counted(planned):
    ct, _, ref = planned
    hot = ct.data.copy()
    hot[18, 20, 5:8] = 5000.0
    result = check_synthetic(ref, ct.with_data(hot))
    assert result.cts.clipped == {"reference": 0, "synthetic": 3}
    assert result.cts.synthetic.data.max() == 3000.0


def test_refuses_a_synthetic_ct_that_does_not_overlap():
    ct, _ = phantom()
    far = ct.affine.copy()
    far[:3, 3] += 1000.0
    with pytest.raises(DoseError, match="far.nii.gz: does not overlap the reference CT phantom.nii.gz"):
        dose_check(ct, Volume(ct.data, far, "far.nii.gz"), config=FAST)


def test_refuses_an_mr_given_as_the_reference():
    ct, _ = phantom()
    mr = Volume(np.clip(ct.data + 1000.0, 0, None) / 4.0, ct.affine, "mr.nii.gz")
    with pytest.raises(VolumeError, match="mr.nii.gz: given as a CT but looks like an MR"):
        dose_check(mr, ct, config=FAST)


def test_refuses_an_empty_target_and_one_outside_the_body():
    ct, _ = phantom()
    empty = Volume(np.zeros(ct.shape, np.uint8), ct.affine, "empty.nii.gz")
    with pytest.raises(DoseError, match="empty.nii.gz: the target is empty"):
        dose_check(ct, ct, target=empty, config=FAST)
    outside = np.zeros(ct.shape, np.uint8)
    outside[:3, :3, 5:10] = 1
    with pytest.raises(DoseError, match="outside.nii.gz: only 0% of the target lies inside the body"):
        dose_check(ct, ct, target=Volume(outside, ct.affine, "outside.nii.gz"), config=FAST)


def test_a_body_too_small_for_the_synthetic_target_is_refused():
    ct, _ = phantom(shape=(6, 6, 20))   # 30 mm across: no room for a 15 mm sphere 10 mm deep
    with pytest.raises(DoseError, match="synthetic target does not fit"):
        dose_check(ct, ct, config=FAST)
