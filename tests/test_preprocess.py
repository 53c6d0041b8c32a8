"""Tests for mrgan_tf.preprocess: geometry, intensities, masks, slices, patients."""
import numpy as np
import pytest

from mrgan_tf import preprocess as pp
from mrgan_tf.io.volumes import Volume, VolumeError


def grid_world(affine, shape):
    """(X, Y, Z, 3) world coordinates of every voxel centre."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def smooth_inside(p, centre, radii, edge_mm=1.5):
    """~1 inside the ellipsoid, ~0 outside, with a smooth edge (so resampling is well-posed)."""
    r = np.sqrt((((p - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(radii) / edge_mm))


def head_phantom(affine, shape):
    """Ellipsoid head centred on world (0, 0, 0): scalp, skull, brain, ventricle; CT in HU and a T2-like MR."""
    p = grid_world(affine, shape)
    head = smooth_inside(p, (0, 0, 0), (40, 50, 45))
    brain = smooth_inside(p, (0, 0, 0), (33, 43, 38))
    vent = smooth_inside(p, (6, 5, 4), (6, 12, 8))
    ct = -1000 + head * 1040 + (head - brain) * 900 + vent * (-30)
    mr = head * 300 + brain * 300 + vent * 900
    return Volume(ct.astype(np.float32), affine, "ct.nii.gz"), Volume(mr.astype(np.float32), affine, "mr.nii.gz")


def centred_affine(shape, spacing):
    a = np.diag(list(spacing) + [1.0])
    a[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(spacing)
    return a


# ---------------------------------------------------------------- config

def test_config_round_trip_defaults_and_validation():
    cfg = pp.PreprocessConfig()
    assert (cfg.spacing_mm, cfg.image_size, cfg.fit, cfg.bits) == (1.0, 256, "pad", 8)
    assert (cfg.ct_window_center, cfg.ct_window_width, cfg.mr_percentiles) == (40.0, 80.0, (0.5, 99.5))
    d = pp.PreprocessConfig(bits=16, fit="resize").to_dict()
    assert pp.PreprocessConfig.from_dict(d) == pp.PreprocessConfig(bits=16, fit="resize")
    assert pp.PreprocessConfig.from_dict({"bits": 16}).image_size == 256
    with pytest.raises(ValueError, match="unknown"):
        pp.PreprocessConfig.from_dict({"bitz": 16})
    for bad in ({"bits": 12}, {"ct_window_width": 0}, {"fit": "stretch"}, {"mr_percentiles": (99, 1)},
                {"register_model": "bspline"}):
        with pytest.raises(ValueError):
            pp.PreprocessConfig(**bad)


# ---------------------------------------------------------------- intensities

def test_window_ct_hand_values_and_inverse():
    hu = np.array([0, 40, 80, 1000, -1000, 20], np.float32)
    np.testing.assert_allclose(pp.window_ct(hu, 40, 80), [0.0, 0.5, 1.0, 1.0, 0.0, 0.25])
    inside = np.array([0, 10, 40, 79.5], np.float32)
    np.testing.assert_allclose(pp.unwindow_ct(pp.window_ct(inside)), inside, atol=1e-4)


def test_tf_window_matches_numpy():
    hu = np.linspace(-1200, 1500, 101).astype(np.float32)
    np.testing.assert_allclose(pp.window_ct_tf(hu, 40, 80).numpy(), pp.window_ct(hu, 40, 80), atol=1e-6)
    q = np.linspace(0, 1, 11).astype(np.float32)
    np.testing.assert_allclose(pp.unwindow_ct_tf(q, 50, 350).numpy(), pp.unwindow_ct(q, 50, 350), atol=1e-4)


@pytest.mark.parametrize("bits,dtype", [(8, np.uint8), (16, np.uint16)])
def test_quantise_round_trip(bits, dtype):
    q01 = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    q = pp.quantise(q01, bits)
    assert q.dtype == dtype and q.max() <= 2 ** bits - 1
    assert np.abs(pp.dequantise(q, bits) - q01).max() <= 0.5 / (2 ** bits - 1) + 1e-7
    np.testing.assert_array_equal(pp.quantise(pp.dequantise(q, bits), bits), q)
    assert pp.quantise(np.array([-0.5, 1.5]), bits).tolist() == [0, 2 ** bits - 1]


def test_mr_range_normalise_and_model_range():
    mr = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    mask = mr >= 500
    lo, hi = pp.mr_range(mr, mask, (0.0, 100.0))
    assert (lo, hi) == (500.0, 999.0)
    assert pp.mr_range(np.full((4, 4, 4), 7.0), None) == (7.0, 8.0)  # constant image stays finite
    q = pp.normalise_mr(mr, lo, hi)
    assert q.min() == 0.0 and q.max() == 1.0
    np.testing.assert_allclose(pp.denormalise_mr(q, lo, hi)[mask], mr[mask], atol=1e-3)
    np.testing.assert_allclose(pp.from_model_range(pp.to_model_range(q)), q, atol=1e-6)
    assert pp.to_model_range(np.float32(0.0)) == -1.0 and pp.to_model_range(np.float32(1.0)) == 1.0


# ---------------------------------------------------------------- geometry

def test_to_canonical_from_lps_oblique_keeps_world_coordinates():
    rng = np.random.default_rng(1)
    data = rng.random((5, 6, 7)).astype(np.float32)
    # Axes permuted and flipped (LPS-like), with a small rotation: i -> -y, j -> -x, k -> +z.
    c, s = np.cos(0.1), np.sin(0.1)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.array([[0, -0.9, 0], [-1.2, 0, 0], [0, 0, 3.0]])
    affine[:3, 3] = [10, -20, 30]
    vol = Volume(data, affine, "x.nii")
    can = pp.to_canonical(vol)
    import nibabel as nib
    assert nib.aff2axcodes(can.affine) == ("R", "A", "S")
    assert can.shape == (6, 5, 7)
    # Same value at the same world point: voxel -> world in both volumes.
    w_orig = grid_world(vol.affine, vol.shape).reshape(-1, 3)
    w_can = grid_world(can.affine, can.shape).reshape(-1, 3)
    order_o, order_c = np.lexsort(np.round(w_orig, 6).T), np.lexsort(np.round(w_can, 6).T)
    np.testing.assert_allclose(w_orig[order_o], w_can[order_c], atol=1e-9)
    np.testing.assert_array_equal(data.reshape(-1)[order_o], can.data.reshape(-1)[order_c])


def test_resample_to_spacing_keeps_world_position_of_a_dot():
    shape, spacing = (60, 60, 20), (0.8, 0.8, 2.5)
    affine = centred_affine(shape, spacing)
    target = np.array([5.3, -7.1, 6.0])
    # A smooth blob (sigma 2 mm) at a world point between voxel centres.
    d2 = ((grid_world(affine, shape) - target) ** 2).sum(-1)
    vol = Volume(np.exp(-d2 / (2 * 2.0 ** 2)).astype(np.float32), affine, "dot")
    out = pp.resample_to_spacing(vol, 1.0)
    np.testing.assert_allclose(out.spacing, 1.0)
    assert out.shape == (48, 48, 50)
    np.testing.assert_allclose(out.affine[:3, :3], np.eye(3))
    # Field of view preserved: first/last voxel boxes span the same world extent.
    lo_old = affine[:3, 3] - np.array(spacing) / 2
    lo_new = out.affine[:3, 3] - 0.5
    np.testing.assert_allclose(lo_new, lo_old, atol=1e-9)
    peak = np.array(np.unravel_index(np.argmax(out.data), out.shape), float)
    peak_world = out.affine[:3, :3] @ peak + out.affine[:3, 3]
    assert np.all(np.abs(peak_world - target) <= 0.5 + 1e-6)
    # Intensity-weighted centroid is much more precise than half a voxel.
    w = grid_world(out.affine, out.shape)
    centroid = (w * out.data[..., None]).sum((0, 1, 2)) / out.data.sum()
    assert np.abs(centroid - target).max() < 0.1


def test_resample_like_world_coordinates_transform_and_fill():
    shape = (20, 20, 20)
    affine = centred_affine(shape, (2, 2, 2))
    vol = Volume(grid_world(affine, shape)[..., 0].astype(np.float32), affine, "xramp")  # value = world x
    ref_aff = centred_affine((30, 10, 10), (1.5, 1.5, 1.5))
    ref = Volume(np.zeros((30, 10, 10), np.float32), ref_aff, "ref")
    out = pp.resample_like(vol, ref, fill=-99.0)
    assert out.shape == ref.shape and np.array_equal(out.affine, ref_aff)
    x_ref = grid_world(ref_aff, ref.shape)[..., 0]
    inside = np.abs(x_ref) <= 20 - 1  # moving centres span [-19, 19] mm
    np.testing.assert_allclose(out.data[inside], x_ref[inside], atol=1e-4)
    assert np.all(out.data[np.abs(x_ref) > 20] == -99.0)  # beyond the voxel boxes: fill
    # A world->world transform: reference point p samples moving at p + (3, 0, 0).
    shift = np.eye(4)
    shift[0, 3] = 3.0
    out2 = pp.resample_like(vol, ref, transform=shift, fill=-99.0)
    ok = np.abs(x_ref + 3) <= 19
    np.testing.assert_allclose(out2.data[ok], x_ref[ok] + 3, atol=1e-4)


def test_overlap_fraction():
    a = Volume(np.zeros((10, 10, 10)), centred_affine((10, 10, 10), (1, 1, 1)), "a")
    shifted = np.array(a.affine)
    shifted[0, 3] += 5.0
    b = Volume(np.zeros((10, 10, 10)), shifted, "b")
    assert pp.overlap_fraction(a, a) == 1.0
    assert pp.overlap_fraction(a, b) == pytest.approx(0.5, abs=0.07)
    far = np.array(a.affine)
    far[2, 3] += 100
    assert pp.overlap_fraction(a, Volume(np.zeros((10, 10, 10)), far, "far")) == 0.0


# ---------------------------------------------------------------- masks

def test_body_mask_ignores_detached_headrest_and_fills_holes():
    hu = np.full((40, 40, 12), -1000.0, np.float32)
    yy, xx = np.mgrid[:40, :40]
    head = ((xx - 20) ** 2 + (yy - 18) ** 2) < 12 ** 2
    hole = ((xx - 20) ** 2 + (yy - 18) ** 2) < 4 ** 2
    hu[head] = 40
    hu[hole] = -1000  # air cavity inside the head
    hu[:, 35:38, :] = 200  # headrest/table: bright, detached from the head
    mask = pp.body_mask_from_ct(hu, -500)
    assert mask.dtype == bool
    assert not mask[:, 35:38, :].any()
    assert mask[head].all()  # head kept, cavity filled
    assert mask.sum() == head.sum() * 12


def test_body_mask_from_mr():
    _, mr = head_phantom(centred_affine((32, 32, 32), (4, 4, 4)), (32, 32, 32))
    data = mr.data.copy()
    data[0:2, 0:2, :] = 900  # bright artefact in a corner, detached
    mask = pp.body_mask_from_mr(data)
    assert not mask[0:2, 0:2, :].any()
    head = smooth_inside(grid_world(mr.affine, mr.shape), (0, 0, 0), (40, 50, 45)) > 0.5
    dice = 2 * (mask & head).sum() / (mask.sum() + head.sum())
    assert dice > 0.9 and mask[16, 16, 16]  # centre (dark skull is inside, filled)


# ---------------------------------------------------------------- slices

def test_axial_stack_and_inverse():
    data = np.random.default_rng(2).random((4, 5, 3))
    stack = pp.axial_stack(data)
    assert stack.shape == (3, 5, 4)
    for k in range(3):
        np.testing.assert_array_equal(stack[k], pp.axial_image(data, k))
    np.testing.assert_array_equal(pp.volume_from_axial_stack(stack), data)
    # Row 0 is anterior (largest j), column 0 is smallest i.
    assert stack[1][0, 0] == data[0, 4, 1]


def test_placement_list_round_trip():
    p = pp.Placement(200, 180, 28, 38, 1.0)
    assert pp.Placement.from_list(p.to_list()) == p and len(p.to_list()) == 5


@pytest.mark.parametrize("hw", [(200, 180), (300, 280), (300, 200)])
def test_fit_pad_and_crop_round_trip(hw):
    img = np.random.default_rng(3).random((2,) + hw).astype(np.float32)
    out, pl = pp.fit_to_size(img, 256, "pad", pad_value=0.0)
    assert out.shape == (2, 256, 256) and pl.scale == 1.0
    back = pp.unfit(out, pl, fill=-1.0)
    assert back.shape == img.shape
    kept = back != -1.0
    np.testing.assert_array_equal(back[kept], img[kept])
    rows_cut, cols_cut = max(0, hw[0] - 256), max(0, hw[1] - 256)
    assert (~kept).sum() == 2 * (hw[0] * hw[1] - (hw[0] - rows_cut) * (hw[1] - cols_cut))
    if hw == (200, 180):  # pure pad: exact, padding holds pad_value
        np.testing.assert_array_equal(back, img)
        assert out[0, 0, 0] == 0.0 and (pl.row_offset, pl.col_offset) == (28, 38)


def test_fit_resize_round_trip_on_smooth_image():
    yy, xx = np.mgrid[:120, :90].astype(np.float32)
    img = np.sin(yy / 15) * np.cos(xx / 11)
    out, pl = pp.fit_to_size(img, 64, "resize")
    assert out.shape == (64, 64) and pl.scaled_shape() == (64, 48)
    assert pl.col_offset == 8 and out[:, :8].max() == img.min()  # padded with the image minimum
    back = pp.unfit(out, pl)
    assert back.shape == img.shape
    assert np.abs(back - img)[5:-5, 5:-5].max() < 0.08
    up, pl2 = pp.fit_to_size(img[:40, :30], 64, "resize", order=1)  # upscaling
    assert np.abs(pp.unfit(up, pl2) - img[:40, :30])[2:-2, 2:-2].max() < 0.02
    mask_out, _ = pp.fit_to_size(img > 0, 64, "resize", pad_value=0, order=0)
    assert set(np.unique(mask_out)) <= {0, 1}


# ---------------------------------------------------------------- patients

@pytest.fixture(scope="module")
def phantom_pair():
    shape = (64, 64, 40)
    affine = centred_affine(shape, (2.0, 2.0, 2.5))
    affine[0] *= -1  # stored L->R flipped, as many DICOM-derived files are
    return head_phantom(affine, shape)


def test_prepare_patient_paired(phantom_pair):
    ct, mr = phantom_pair
    # MR on a different grid (coarser, shifted field of view) than the CT.
    mr_aff = centred_affine((40, 40, 40), (3.0, 3.0, 3.0))
    mr_aff[:3, 3] += [1.0, -2.0, 0.5]
    _, mr2 = head_phantom(mr_aff, (40, 40, 40))
    cfg = pp.PreprocessConfig(spacing_mm=2.0, image_size=64, min_foreground=0.05)
    prep = pp.prepare_patient(ct, mr2, None, cfg)
    assert prep.shape == (64, 64, 50)
    assert prep.ct.shape == prep.mr.shape == prep.mask.shape == (50, 64, 64)
    assert prep.ct.dtype == prep.mr.dtype == np.uint8 and prep.mask.dtype == np.uint8
    assert set(np.unique(prep.mask)) <= {0, 1}
    assert prep.keep.dtype == bool and prep.keep.shape == (50,)
    # Head spans z in [-45, 45] mm of the [-50, 50] mm field: end slices dropped, middle kept.
    assert not prep.keep[0] and not prep.keep[-1] and prep.keep[25]
    assert 30 < prep.keep.sum() < 50
    import nibabel as nib
    assert nib.aff2axcodes(prep.affine) == ("R", "A", "S")
    lo, hi = prep.mr_range
    assert 0 < lo < 400 and 1000 < hi <= 1500  # body edge .. bright ventricle
    assert prep.registration is None
    # CT brain (40 HU) is mid-window; the MR ventricle is the brightest structure.
    mid = prep.ct[25].astype(float)
    assert 100 < np.median(mid[prep.mask[25] == 1]) < 200
    assert prep.mr[25].max() == 255 and prep.ct[25][0, 0] == 0


def test_prepare_patient_16_bit_resize_and_single_modality(phantom_pair):
    ct, mr = phantom_pair
    cfg = pp.PreprocessConfig(spacing_mm=2.0, image_size=48, fit="resize", bits=16)
    prep = pp.prepare_patient(ct, None, None, cfg)
    assert prep.mr is None and prep.mr_range is None
    assert prep.ct.dtype == np.uint16 and prep.ct.shape == (50, 48, 48)
    assert prep.placement.scale == pytest.approx(48 / 64)
    mr_only = pp.prepare_patient(None, mr, None, cfg)
    assert mr_only.ct is None and mr_only.mr.dtype == np.uint16 and mr_only.keep.any()


def test_prepare_patient_uses_mask_volume(phantom_pair):
    ct, _ = phantom_pair
    box = np.zeros(ct.shape, np.uint8)
    box[20:40, 20:40, 10:30] = 1
    prep = pp.prepare_patient(ct, None, Volume(box, ct.affine, "mask.nii.gz"),
                              pp.PreprocessConfig(spacing_mm=2.0, image_size=64, min_foreground=0.01))
    # The box spans 20 x 20 voxels in-plane (2 mm) and z 10..29 (2.5 mm) -> 25 slices of 2 mm.
    assert prep.mask.sum(axis=(1, 2)).max() == 400
    assert prep.keep.sum() == 25


def test_prepare_patient_rejects_non_overlapping_pair(phantom_pair):
    ct, mr = phantom_pair
    far = np.array(mr.affine)
    far[2, 3] += 500
    with pytest.raises(VolumeError, match="mr.nii.gz: does not overlap ct.nii.gz"):
        pp.prepare_patient(ct, Volume(mr.data, far, mr.source), None, pp.PreprocessConfig(spacing_mm=2.0))


def test_restack_to_grid_reproduces_volume(phantom_pair):
    ct, mr = phantom_pair
    for cfg in (pp.PreprocessConfig(spacing_mm=2.0, image_size=64),
                pp.PreprocessConfig(spacing_mm=2.0, image_size=56, fit="resize", bits=16)):
        prep = pp.prepare_patient(ct, mr, None, cfg)
        stack01 = pp.dequantise(prep.mr, cfg.bits)
        out = pp.restack_to_grid(stack01, prep.geometry, mr, fill=0.0)
        assert out.shape == mr.shape and np.array_equal(out.affine, mr.affine)
        expected = pp.normalise_mr(mr.data, *prep.mr_range)
        err = np.abs(out.data - expected)
        tol = 0.002 if cfg.fit == "pad" else 0.005
        assert np.mean(err) < tol, (cfg.fit, np.mean(err))
    # Geometry travels through records as plain lists.
    geo = pp.SliceGeometry.from_record(prep.affine.ravel(), list(prep.shape), prep.placement.to_list())
    again = pp.restack_to_grid(stack01, geo, mr)
    np.testing.assert_allclose(again.data, out.data)
    # A partial stack on the prepared grid itself: given slices exact, missing ones filled.
    grid = Volume(np.zeros(prep.shape, np.float32), prep.affine, "grid")
    full = pp.restack_to_grid(stack01, geo, grid)
    part = pp.restack_to_grid(stack01[10:20], geo, grid, fill=-1.0, slice_indices=range(10, 20))
    np.testing.assert_allclose(part.data[:, :, 10:20], full.data[:, :, 10:20], atol=1e-6)
    assert np.all(part.data[:, :, :10] == -1.0) and np.all(part.data[:, :, 20:] == -1.0)
    with pytest.raises(ValueError, match="slices"):
        pp.restack_to_grid(stack01[:5], geo, mr)


# ---------------------------------------------------------------- geometry: nothing lost silently

def test_resampling_keeps_every_voxel_of_a_fine_grid():
    """0.3 mm voxels -> 1 mm: the new grid covers every source voxel centre (no lost border ring)."""
    shape, sp = (168, 168, 10), (0.3, 0.3, 3.0)
    vol = Volume(np.ones(shape, np.float32), centred_affine(shape, sp), "fine.nii.gz")
    out = pp.resample_to_spacing(vol, 1.0)
    assert out.shape[:2] == (51, 51)  # ceil(50.4); rounding down gave 50 and lost the ring
    src = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = vol.affine[:3, :3] @ src + vol.affine[:3, 3:4]
    idx = np.linalg.solve(out.affine[:3, :3], world - out.affine[:3, 3:4])
    assert np.all(idx >= -0.5) and np.all(idx <= np.array(out.shape)[:, None] - 0.5)
    back = pp.resample_like(out, vol, order=1, fill=-7.0)
    assert not np.any(back.data == -7.0)  # every voxel of the field of view comes back


def test_fit_crops_about_the_body_not_the_image_centre():
    img = np.zeros((100, 100), np.uint8)
    img[5:35, 60:90] = 1  # body off-centre, smaller than the canvas
    out, placement = pp.fit_to_size(img, 40, keep_box=((5, 35), (60, 90)))
    assert out.sum() == img.sum()  # nothing of the body lost
    centred, _ = pp.fit_to_size(img, 40)
    assert centred.sum() == 50  # the old centre crop kept only a 5 x 10 corner of it
    np.testing.assert_array_equal(pp.unfit(out, placement, order=0), img)


def test_body_outside_the_canvas_is_counted_and_limited(phantom_pair):
    ct, _ = phantom_pair  # head 80 x 100 mm in-plane
    cfg = pp.PreprocessConfig(spacing_mm=2.0, image_size=32, min_foreground=0.01)
    prep = pp.prepare_patient(ct, None, None, cfg)
    assert prep.body_voxels > 0 and 0 < prep.body_lost_fraction < 1
    body = pp.body_mask_from_ct(pp.resample_to_spacing(pp.to_canonical(ct), 2.0).data)
    assert prep.body_voxels == body.sum()
    assert prep.body_voxels - prep.mask.sum() == prep.body_voxels_outside
    problem = prep.body_loss_problem(cfg, "patient p1")
    assert problem.startswith("patient p1: ") and "--image_size" in problem and "--fit=resize" in problem
    assert pp.prepare_patient(ct, None, None, pp.PreprocessConfig(spacing_mm=2.0, image_size=64)
                              ).body_voxels_outside == 0
    resized = pp.prepare_patient(ct, None, None, pp.PreprocessConfig(spacing_mm=2.0, image_size=32, fit="resize"))
    assert resized.body_voxels_outside == 0 and resized.body_loss_problem(cfg, "p") is None


def test_slice_rule_does_not_depend_on_the_canvas(phantom_pair):
    ct, _ = phantom_pair
    kept = [pp.prepare_patient(ct, None, None, pp.PreprocessConfig(spacing_mm=2.0, image_size=s)).keep
            for s in (64, 128, 256)]
    assert kept[0].any() and not kept[0].all()
    np.testing.assert_array_equal(kept[0], kept[1])
    np.testing.assert_array_equal(kept[0], kept[2])
    np.testing.assert_array_equal(pp.keep_slices(np.zeros((3, 4, 4), np.uint8), 0.1), [False] * 3)
