"""The WM/GM tissue-contrast check and the replay of a demo head's tissue labels."""
import nibabel as nib
import numpy as np
import pytest

from mrgan_tf.demo import anatomy
from mrgan_tf.demo import data as demo_data
from mrgan_tf.demo import tissue_contrast as tc


def _phantom(wm=200.0, gm=160.0):
    labels = np.zeros((6, 6, 4), np.uint8)
    labels[:3] = anatomy.WM
    labels[3:5] = anatomy.GM
    image = np.where(labels == anatomy.WM, wm, np.where(labels == anatomy.GM, gm, 0.0))
    return image, labels


def test_ratio_of_means():
    image, labels = _phantom()
    c = tc.wm_over_gm(image, labels, anatomy.WM, anatomy.GM)
    assert (c.n_wm, c.n_gm) == (72, 48)
    assert c.ratio == pytest.approx(200 / 160)
    mask = np.ones(image.shape, bool)
    mask[0] = False                                   # the mask is honoured
    assert tc.wm_over_gm(image, labels, anatomy.WM, anatomy.GM, mask).n_wm == 48


def test_compare_within_and_outside_the_tolerance():
    ref = tc.wm_over_gm(*_phantom(200, 160), anatomy.WM, anatomy.GM)
    close = tc.wm_over_gm(*_phantom(190, 160), anatomy.WM, anatomy.GM)      # 5 % lower
    flat = tc.wm_over_gm(*_phantom(165, 160), anatomy.WM, anatomy.GM)       # a smooth brain
    assert tc.compare(close, ref)["within_tolerance"]
    r = tc.compare(flat, ref)
    assert not r["within_tolerance"] and r["relative_difference"] == pytest.approx(1 - 165 / 200)


def test_refuses_missing_tissue_and_shape_mismatch():
    image, labels = _phantom()
    with pytest.raises(ValueError, match="grey"):
        tc.wm_over_gm(image, np.where(labels == anatomy.GM, 0, labels), anatomy.WM, anatomy.GM)
    with pytest.raises(ValueError, match="shape"):
        tc.wm_over_gm(image[:-1], labels, anatomy.WM, anatomy.GM)


def test_replays_a_demo_head_and_refuses_other_data(tmp_path):
    out = tmp_path / "data"
    demo_data.build_demo_dataset(out, n_paired_train=0, n_paired_test=1, n_unpaired_ct=0, n_unpaired_mr=0,
                                 size_scale=0.25, progress=False)
    labels = tc.replay_demo_labels(out, "pair_test_01")
    ct = nib.load(out / "pair_test_01" / "ct.nii.gz")
    assert labels["labels"].shape == labels["mr_labels"].shape == ct.shape
    for key in ("labels", "mr_labels"):
        assert {anatomy.WM, anatomy.GM} <= set(np.unique(labels[key]).tolist())
    assert not np.array_equal(labels["labels"], labels["mr_labels"])      # the MR is misaligned on purpose
    data = np.asanyarray(ct.dataobj).copy()
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] += 7
    nib.save(nib.Nifti1Image(data, ct.affine, ct.header), out / "pair_test_01" / "ct.nii.gz")
    with pytest.raises(ValueError, match="rebuild"):
        tc.replay_demo_labels(out, "pair_test_01")
    with pytest.raises(ValueError, match="no patient"):
        tc.replay_demo_labels(out, "pair_test_09")
