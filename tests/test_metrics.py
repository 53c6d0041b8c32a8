"""Tests for mrgan_tf.evaluation.metrics: hand-computed values, scikit-image agreement, conventions."""
import csv
import io
import json
import math

import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from mrgan_tf.evaluation import metrics as M
from mrgan_tf.evaluation import synthrad_metrics as S
from mrgan_tf.evaluation import tables as T

REF0 = np.zeros((2, 2))
PRED0 = np.array([[0.0, 2.0], [4.0, 6.0]])


@pytest.fixture(scope="module")
def rand_pair():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 255, size=(3, 32, 40))
    pred = np.clip(ref + rng.normal(0, 20, size=ref.shape), 0, 255)
    return ref, pred


def test_hand_computed_mae_mse_psnr():
    assert M.mae(REF0, PRED0) == pytest.approx(3.0)
    assert M.mse(REF0, PRED0) == pytest.approx(14.0)
    assert M.psnr(REF0, PRED0) == pytest.approx(10 * math.log10(65025 / 14))
    assert M.psnr(REF0, PRED0, data_range=1.0) == pytest.approx(10 * math.log10(1 / 14))


def test_identical_images_inf_psnr_and_unit_ssim(rand_pair):
    ref, _ = rand_pair
    assert M.psnr(ref, ref) == float("inf")
    assert M.psnr_paper_convention(ref, ref) == float("inf")
    assert M.ssim(ref, ref) == pytest.approx(1.0)
    assert M.ssim(ref, ref, mask=ref > 100) == pytest.approx(1.0)
    assert M.mae(ref, ref) == 0.0


def test_agrees_with_skimage(rand_pair):
    ref, pred = rand_pair
    assert M.mse(ref, pred) == pytest.approx(mean_squared_error(ref, pred), abs=1e-6)
    assert M.psnr(ref, pred) == pytest.approx(
        peak_signal_noise_ratio(ref, pred, data_range=255), abs=1e-6)
    per_slice = [structural_similarity(r, p, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False) for r, p in zip(ref, pred)]
    assert M.ssim(ref, pred) == pytest.approx(np.mean(per_slice), abs=1e-6)
    # a single 2-D slice is the same as a stack of one
    assert M.ssim(ref[0], pred[0]) == pytest.approx(per_slice[0], abs=1e-6)


def test_paper_convention_offset_is_exactly_20log10_255(rand_pair):
    ref, pred = rand_pair
    diff = M.psnr_paper_convention(ref, pred) - M.psnr(ref, pred)
    assert diff == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert diff == pytest.approx(48.13, abs=0.01)


def test_masked_metrics_ignore_outside_pixels(rand_pair):
    ref, pred = rand_pair
    mask = np.zeros(ref.shape, bool)
    mask[:, 8:24, 10:30] = True
    before = {k: f(ref, pred, mask=mask) for k, f in
              (("mae", M.mae), ("mse", M.mse), ("psnr", M.psnr))}
    pred2 = pred.copy()
    pred2[~mask] = 255 - pred2[~mask]
    for k, f in (("mae", M.mae), ("mse", M.mse), ("psnr", M.psnr)):
        assert f(ref, pred2, mask=mask) == pytest.approx(before[k])
    assert M.mae(ref, pred2) != pytest.approx(M.mae(ref, pred))
    # hand check: masked MAE is the mean over masked pixels only
    assert before["mae"] == pytest.approx(np.abs(ref - pred)[mask].mean())
    # a 2-D mask broadcasts over the stack
    assert M.mae(ref, pred, mask=mask[0]) == pytest.approx(before["mae"])


def test_masked_ssim_is_mean_of_map_inside_mask(rand_pair):
    ref, pred = rand_pair
    mask = np.zeros(ref.shape, bool)
    mask[:, 4:20, 5:35] = True
    maps = [structural_similarity(r, p, data_range=255, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, full=True)[1]
            for r, p in zip(ref, pred)]
    expected = np.stack(maps)[mask].mean()
    assert M.ssim(ref, pred, mask=mask) == pytest.approx(expected, abs=1e-12)


def test_pooled_psnr_differs_from_mean_of_slice_psnr():
    # slice 0 nearly perfect, slices 1-2 poor: the per-slice average is dominated by slice 0
    ref = np.zeros((3, 4, 4))
    pred = ref.copy()
    pred[0, 0, 0] = 1.0
    pred[1:] = 50.0
    pooled = M.psnr(ref, pred)
    mean_slices = np.mean([M.psnr(r, p) for r, p in zip(ref, pred)])
    mse_pooled = (1.0 + 2 * 16 * 2500.0) / 48
    assert pooled == pytest.approx(10 * math.log10(65025 / mse_pooled))
    assert mean_slices - pooled > 10.0


def test_ct_physical_metrics_clip_to_window():
    ref = np.full((1, 16, 16), 0.0)
    pred = ref.copy()
    pred[0, :8] = 5000.0         # above 3000: PSNR/SSIM see 3000, MAE sees 5000
    ref[0, 8:] = -3000.0         # below -1024 in the reference only
    pred[0, 8:] = -1024.0        # -> identical after clipping
    mask = np.ones(ref.shape, bool)
    out = M.physical_ct_metrics(ref, pred, mask)
    assert out["mae"] == pytest.approx((5000 * 128 + 1976 * 128) / 256)
    mse_clipped = 3000.0 ** 2 * 128 / 256
    assert out["psnr"] == pytest.approx(10 * math.log10(4024.0 ** 2 / mse_clipped))
    assert -1 <= out["ssim"] < 1


def test_ct_physical_metrics_masked_region_only():
    rng = np.random.default_rng(1)
    ref = rng.uniform(-1000, 2000, size=(2, 20, 20))
    pred = ref + rng.normal(0, 50, size=ref.shape)
    mask = np.zeros(ref.shape, bool)
    mask[:, 5:15, 5:15] = True
    a = M.physical_ct_metrics(ref, pred, mask)
    pred2 = pred.copy()
    pred2[~mask] += 700.0
    b = M.physical_ct_metrics(ref, pred2, mask)
    assert a["mae"] == pytest.approx(b["mae"]) and a["psnr"] == pytest.approx(b["psnr"])
    assert a["ssim"] == pytest.approx(b["ssim"])  # outside set to -1024 before SSIM


def test_mr_physical_metrics_use_ref_range_in_mask():
    ref = np.zeros((1, 16, 16))
    ref[0, 4:12, 4:12] = np.linspace(100, 500, 64).reshape(8, 8)
    ref[0, 0, 0] = 10000.0  # outside the mask: must not set the range
    mask = np.zeros(ref.shape, bool)
    mask[0, 4:12, 4:12] = True
    pred = ref + 4.0
    out = M.physical_mr_metrics(ref, pred, mask)
    assert out["mae"] == pytest.approx(4.0)
    assert out["psnr"] == pytest.approx(10 * math.log10(400.0 ** 2 / 16.0))


def test_patient_metrics_keys(rand_pair):
    ref, pred = rand_pair
    out = S.patient_metrics(ref, pred)
    assert set(out) == {"mae", "psnr", "psnr_paper", "ssim"}
    out = S.patient_metrics(ref, pred, mask=ref > 50)
    assert set(out) == {"mae", "psnr", "psnr_paper", "ssim", "mae_masked", "psnr_masked",
                        "ssim_masked"}
    assert all(isinstance(v, float) for v in out.values())


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        M.mae(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        M.mae(REF0, PRED0, mask=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="mask shape"):
        M.mae(REF0, PRED0, mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="11x11"):
        M.ssim(REF0, PRED0)
    with pytest.raises(ValueError, match="slice"):
        M.mae(np.zeros(4), np.zeros(4))


def test_summarise_sample_sd_and_missing():
    rows = [{"mae": 1.0}, {"mae": 2.0}, {"mae": 4.0}, {"psnr": 3.0}]
    s = T.summarise(rows, ["mae", "psnr", "ssim"])
    assert s["mae"]["mean"] == pytest.approx(7 / 3)
    assert s["mae"]["sd"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert s["mae"]["n"] == 3
    assert s["psnr"] == {"mean": 3.0, "sd": 0.0, "n": 1}
    assert s["ssim"] == {"mean": None, "sd": None, "n": 0}


def _table_input():
    # MAE columns of the paper's Table I (Paired, Ours)
    ours = [22.76, 18.27, 22.27, 16.75, 17.68, 17.57, 16.55, 18.30, 18.57, 24.91]
    paired = [24.20, 17.82, 22.01, 18.23, 18.26, 20.52, 20.63, 19.42, 19.12, 23.23]
    pids = [f"Patient{i:02d}" for i in range(1, 11)]
    per = {
        "paired": {p: {"mae": v, "psnr": 17.0} for p, v in zip(pids, paired)},
        "mrgan": {p: {"mae": v, "psnr": 17.0} for p, v in zip(pids, ours)},
    }
    del per["paired"]["Patient10"]["psnr"]  # a missing value
    return per


def test_table_markdown_format():
    text = T.table_markdown(_table_input(), metrics=("mae", "psnr"))
    lines = text.strip().splitlines()
    assert lines[0] == "| Patient | MAE paired | MAE mrgan | PSNR paired | PSNR mrgan |"
    assert len(lines) == 2 + 10 + 1
    assert lines[-1].startswith("| Avg±sd |")
    avg = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert avg == ["Avg±sd", "20.34±2.20", "19.36±2.88", "17.00±0.00", "17.00±0.00"]
    p10 = [c.strip() for c in lines[-2].strip("|").split("|")]
    assert p10 == ["Patient10", "23.23", "24.91", "—", "17.00"]


def test_table_markdown_population_sd_reproduces_paper():
    # the paper's 19.36±2.73 for MR-GAN MAE is a population sd (ddof=0)
    text = T.table_markdown(_table_input(), metrics=("mae",), ddof=0)
    assert text.strip().splitlines()[-1] == "| Avg±sd | 20.34±2.09 | 19.36±2.73 |"


def test_table_markdown_missing_patient_and_metric():
    per = {"a": {"p1": {"mae": 1.0}}, "b": {"p2": {"mae": 2.0}}}
    text = T.table_markdown(per, metrics=("mae", "ssim"))
    assert "| p1 | 1.00 | — | — | — |" in text
    assert "| p2 | — | 2.00 | — | — |" in text
    assert "| Avg±sd | 1.00±0.00 | 2.00±0.00 | — | — |" in text


def test_table_csv_and_json():
    per = _table_input()
    rows = list(csv.DictReader(io.StringIO(T.table_csv(per, metrics=("mae", "psnr")))))
    assert len(rows) == 2 * 10 * 2
    assert rows[0] == {"model": "paired", "patient": "Patient01", "metric": "mae", "value": "24.2"}
    missing = [r for r in rows if r["model"] == "paired" and r["patient"] == "Patient10"
               and r["metric"] == "psnr"]
    assert missing[0]["value"] == ""
    per["mrgan"]["Patient01"]["psnr"] = float("inf")
    doc = json.loads(T.table_json(per, metrics=("mae", "psnr")))
    assert doc["per_patient"]["mrgan"]["Patient01"]["psnr"] is None
    assert doc["per_patient"]["paired"]["Patient10"]["psnr"] is None
    assert doc["summary"]["mrgan"]["mae"]["mean"] == pytest.approx(19.363)
    assert doc["summary"]["paired"]["psnr"]["n"] == 9


# ----------------------------------------------------------------------------
# SynthRAD conventions: 3-D volumes, HU, inside the mask

C1_CT = (0.01 * 4024.0) ** 2  # SSIM constants for data range 4024
C2_CT = (0.03 * 4024.0) ** 2


@pytest.fixture(scope="module")
def ct_pair():
    """A smooth 'CT' in HU and a noisy prediction, 20 x 24 x 18 voxels, with an interior mask."""
    from scipy import ndimage
    rng = np.random.default_rng(3)
    ref = ndimage.gaussian_filter(rng.uniform(-1000, 2000, (20, 24, 18)), 2).astype(np.float32)
    ref = (ref - ref.mean()) * 8 + 40  # spread the values over soft tissue and bone
    pred = (ref + rng.normal(0, 40, ref.shape)).astype(np.float32)
    mask = np.zeros(ref.shape, bool)
    mask[4:16, 4:20, 4:14] = True
    return ref, pred, mask


def test_synthrad_constant_offset_by_hand():
    ref = np.zeros((12, 12, 12), np.float32)          # 0 HU everywhere
    pred = ref + 100.0
    mask = np.ones(ref.shape, bool)
    assert S.synthrad_mae(ref, pred, mask) == pytest.approx(100.0)
    assert S.synthrad_psnr(ref, pred, mask) == pytest.approx(20 * math.log10(4024.0 / 100.0))
    # equal variances and covariance: SSIM is the luminance term of the shifted means 1024 and 1124
    shifted = (2 * 1024 * 1124 + C1_CT) / (1024 ** 2 + 1124 ** 2 + C1_CT)
    assert S.synthrad_ssim(ref, pred, mask) == pytest.approx(shifted, rel=1e-6)
    # the +1024 shift is what keeps this near 1: unshifted means 0 and 100 give C1 / (100^2 + C1)
    unshifted = structural_similarity(ref, pred, data_range=4024.0)
    assert unshifted == pytest.approx(C1_CT / (100.0 ** 2 + C1_CT), rel=1e-5)
    assert shifted - unshifted > 0.8
    assert S.synthrad_ms_ssim(ref, ref, mask) == pytest.approx(1.0)


def test_synthrad_known_noise_by_hand():
    # +-50 HU in a 3-D checkerboard on a constant 0 HU reference
    i, j, k = np.indices((13, 13, 13))
    noise = 50.0 * (-1.0) ** (i + j + k)
    ref = np.zeros(noise.shape, np.float32)
    pred = (ref + noise).astype(np.float32)
    mask = np.ones(ref.shape, bool)
    assert S.synthrad_mae(ref, pred, mask) == pytest.approx(50.0)
    assert S.synthrad_psnr(ref, pred, mask) == pytest.approx(20 * math.log10(4024.0 / 50.0))
    # A 7x7x7 box holds 172 voxels of the centre's sign and 171 of the other: local mean of the
    # noise = +-50/343; its sample variance is 343/342 * 50^2 (1 - 1/343^2); the reference's is 0.
    vy = 343 / 342 * 50.0 ** 2 * (1 - 1 / 343 ** 2)
    inner = (slice(3, -3),) * 3
    sign = ((-1.0) ** (i + j + k))[inner]
    uy = 1024.0 + sign * 50.0 / 343
    ssim_map = (2 * 1024.0 * uy + C1_CT) / (1024.0 ** 2 + uy ** 2 + C1_CT) * C2_CT / (vy + C2_CT)
    assert S.synthrad_ssim(ref, pred, mask) == pytest.approx(ssim_map.mean(), rel=1e-5)


def test_synthrad_ssim_agrees_with_skimage(ct_pair):
    ref, pred, mask = ct_pair
    lo, hi = S.SYNTHRAD2023_HU_RANGE
    a, b = np.clip(ref, lo, hi) - lo, np.clip(pred, lo, hi) - lo
    everywhere = np.ones(ref.shape, bool)
    assert S.synthrad_ssim(ref, pred, everywhere) == pytest.approx(
        structural_similarity(a, b, data_range=hi - lo), abs=1e-6)
    # with a mask: outside set to -1024 (0 after the shift), map cropped by 3, mean inside the mask
    a, b = np.where(mask, a, 0), np.where(mask, b, 0)
    _, ssim_map = structural_similarity(a, b, data_range=hi - lo, full=True)
    inner = (slice(3, -3),) * 3
    assert S.synthrad_ssim(ref, pred, mask) == pytest.approx(ssim_map[inner][mask[inner]].mean(), abs=1e-6)
    # one MS-SSIM level of weight 1 is that SSIM, where the mask keeps 3 voxels off the edges
    one_level = S.synthrad_ms_ssim(ref, pred, mask, value_range=S.SYNTHRAD2023_HU_RANGE, weights=(1.0,))
    assert one_level == pytest.approx(S.synthrad_ssim(ref, pred, mask), abs=1e-5)


def test_synthrad_psnr_clips_to_the_population_range(ct_pair):
    ref, pred, mask = ct_pair
    wild = pred.copy()
    wild[mask] = np.where(ref[mask] > 500, 9000.0, -3000.0)   # far outside [-1024, 3000]
    clipped = np.clip(wild, -1024, 3000)
    assert S.synthrad_psnr(ref, wild, mask) == pytest.approx(S.synthrad_psnr(ref, clipped, mask))
    assert S.synthrad_mae(ref, wild, mask) > S.synthrad_mae(ref, clipped, mask)   # MAE is not clipped
    mse = np.mean((np.clip(ref[mask], -1024, 3000) - clipped[mask]).astype(np.float64) ** 2)
    assert S.synthrad_psnr(ref, wild, mask) == pytest.approx(10 * math.log10(4024.0 ** 2 / mse))


def test_synthrad_mask_excludes_a_huge_error(ct_pair):
    ref, pred, mask = ct_pair
    before = S.synthrad_ct_metrics(ref, pred, mask)
    broken = pred.copy()
    broken[:, :, :3] = 3000.0          # a slab of bone where the body is not
    assert not mask[:, :, :3].any()
    after = S.synthrad_ct_metrics(ref, broken, mask)
    for key in before:
        assert after[key] == pytest.approx(before[key], abs=1e-9), key
    everywhere = np.ones(ref.shape, bool)
    whole_before, whole_after = (S.synthrad_ct_metrics(ref, p, everywhere) for p in (pred, broken))
    assert whole_after["mae"] > whole_before["mae"] + 300
    assert whole_after["psnr"] < whole_before["psnr"] - 5
    assert whole_after["ssim"] < whole_before["ssim"] - 0.05
    assert whole_after["ms_ssim"] < whole_before["ms_ssim"]
    assert before["mae"] == pytest.approx(np.abs(ref - pred)[mask].mean(), rel=1e-6)


def test_synthrad_ms_ssim_falls_with_the_noise(ct_pair):
    ref, _, mask = ct_pair
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 1, ref.shape)
    values = [S.synthrad_ms_ssim(ref, ref + s * noise, mask) for s in (0.0, 30.0, 300.0)]
    assert values[0] == pytest.approx(1.0)
    assert 1.0 > values[1] > values[2] > 0.0


def test_synthrad_mr_metrics_use_the_reference_range(ct_pair):
    ref_hu, _, mask = ct_pair
    ref = (ref_hu - ref_hu.min()) / 4 + 10.0        # MR-like positive units
    pred = ref + 5.0
    pred[0, 0, 0] = 1e6                              # outside the mask: ignored
    out = S.synthrad_mr_metrics(ref, pred, mask)
    lo, hi = ref[mask].min(), ref[mask].max()
    assert (out["range_lo"], out["range_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert out["mae"] == pytest.approx(5.0, rel=1e-5)
    # the prediction is clipped into the reference's range before the squared error
    mse = np.mean((ref[mask] - np.clip(pred[mask], lo, hi)).astype(np.float64) ** 2)
    assert out["psnr"] == pytest.approx(10 * math.log10((hi - lo) ** 2 / mse))
    assert out["ssim"] == pytest.approx(S.synthrad_ssim(ref, pred, mask, (lo, hi)))
    assert 0 < out["ms_ssim"] <= 1


def test_synthrad_bad_inputs_raise():
    vol = np.zeros((8, 8, 8))
    with pytest.raises(ValueError, match="3-D"):
        S.synthrad_mae(vol[0], vol[0], np.ones((8, 8)))
    with pytest.raises(ValueError, match="empty"):
        S.synthrad_ct_metrics(vol, vol, np.zeros(vol.shape))
    with pytest.raises(ValueError, match="mask shape"):
        S.synthrad_mae(vol, vol, np.ones((8, 8, 7)))
    with pytest.raises(ValueError, match="at least 7"):
        S.synthrad_ssim(np.zeros((8, 8, 6)), np.zeros((8, 8, 6)), np.ones((8, 8, 6)))
    with pytest.raises(ValueError, match="constant"):
        S.synthrad_mr_metrics(vol, vol, np.ones(vol.shape))


def test_gradient_mae_sees_flicker_between_slices_not_a_constant_offset():
    ref = np.tile(np.arange(6, dtype=np.float32)[None, None, :], (4, 4, 1))      # a ramp along axis 2
    mask = np.ones(ref.shape, bool)
    assert S.gradient_mae(ref, ref + 7.0, mask, axis=2) == 0.0              # offset: same steps
    flicker = ref + np.where(np.arange(6) % 2, 1.0, -1.0)[None, None, :]
    assert S.gradient_mae(ref, flicker, mask, axis=2) == pytest.approx(2.0)
    assert S.gradient_mae(ref, flicker, mask, axis=0) == 0.0
    with pytest.raises(ValueError, match="no neighbouring voxel pair along axis 2"):
        alone = np.zeros(ref.shape, bool)
        alone[:, :, 0] = True
        S.gradient_mae(ref, flicker, alone, axis=2)
