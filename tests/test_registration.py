"""Tests for mrgan_tf.preprocess.registration: SimpleITK conversion and recovery of a known affine."""
import time

import numpy as np
import pytest

from mrgan_tf import preprocess as pp
from mrgan_tf.io.volumes import Volume
from mrgan_tf.preprocess import registration


def blob(points, centre, radii, edge_mm=2.0):
    r = np.sqrt((((points - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(radii) / edge_mm))


def structured_head(points, modality):
    """Asymmetric head-like structure (scalp, skull, textured brain, ventricles, lesion);
    "ct" (HU) and "mr" (T2-like) have different, non-monotonic contrasts."""
    head = blob(points, (0, 0, 0), (45, 52, 40))
    skull_out = blob(points, (0, 0, 1), (41, 48, 36))
    brain = blob(points, (0, 0, 2), (37, 44, 32))
    scalp, skull = head - skull_out, skull_out - brain
    vent = blob(points, (-9, 6, 5), (5, 14, 7)) + blob(points, (8, 3, 2), (4, 10, 6))
    lesion = blob(points, (18, -20, 12), (7, 7, 7))
    # Smooth "gyral" texture shared by both modalities (random plane waves, 6-12 mm
    # wavelengths): MI needs more than a few flat, nearly symmetric regions.
    rng = np.random.default_rng(7)
    waves = rng.normal(size=(12, 3))
    waves *= (2 * np.pi / rng.uniform(6, 12, size=12) / np.linalg.norm(waves, axis=1))[:, None]
    texture = np.sin(points @ waves.T + rng.uniform(0, 2 * np.pi, 12)).sum(-1) / 3
    if modality == "ct":
        return (-1000 * (1 - head) - 80 * scalp + 1000 * skull + brain * (35 + 10 * texture)
                - 30 * vent + 25 * lesion)
    return 300 * scalp + 60 * skull + brain * (600 - 120 * texture) + 800 * vent - 300 * lesion


def grid(shape, spacing, flip_x=False, origin_shift=(0, 0, 0)):
    a = np.diag(list(spacing) + [1.0])
    a[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(spacing) + np.asarray(origin_shift)
    if flip_x:  # LPS-like storage: i runs right -> left
        a[0] *= -1
    return a


def sample(affine, shape, fn, transform=None):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    if transform is not None:
        world = world @ transform[:3, :3].T + transform[:3, 3]
    return fn(world).reshape(shape).astype(np.float32)


def rotation_z(deg):
    t = np.deg2rad(deg)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


def test_sitk_round_trip_keeps_geometry():
    affine = grid((6, 7, 8), (0.9, 1.1, 2.5), flip_x=True, origin_shift=(3, -4, 5))
    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    img = registration.to_sitk(Volume(data, affine, "v"))
    assert img.GetSize() == (6, 7, 8)
    # ITK's physical point (LPS) of voxel (1, 2, 3) is the RAS world point with x, y negated.
    ras = affine @ [1, 2, 3, 1]
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((1, 2, 3)), [-ras[0], -ras[1], ras[2]])
    assert img.GetPixel(1, 2, 3) == pytest.approx(data[1, 2, 3])
    back = registration.from_sitk(img, "v")
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(back.data, data)


def test_register_affine_recovers_known_transform():
    # Truth: fixed world point x corresponds to moving world point T x.
    true_t = rotation_z(4.0)
    true_t[:3, 3] = [3.0, -2.0, 4.0]
    f_shape, f_aff = (64, 64, 56), grid((64, 64, 56), (2.0, 2.0, 2.0))
    fixed = Volume(sample(f_aff, f_shape, lambda p: structured_head(p, "ct")), f_aff, "ct")
    # Moving: MR contrast on another grid (flipped x, other spacing and field of view).
    m_shape, m_aff = (56, 60, 44), grid((56, 60, 44), (2.2, 2.0, 2.5), flip_x=True, origin_shift=(2, 1, 3))
    inv_t = np.linalg.inv(true_t)
    moving = Volume(sample(m_aff, m_shape, lambda p: structured_head(p, "mr"), transform=inv_t), m_aff, "mr")

    body = pp.body_mask_from_ct(fixed.data)
    start = time.perf_counter()
    result = registration.register_affine(fixed, moving, fixed_mask=body & (fixed.data < 300.0), seed=0)
    elapsed = time.perf_counter() - start

    corners = np.array(np.meshgrid(*[[0, n - 1] for n in f_shape], indexing="ij")).reshape(3, -1)
    world = f_aff[:3, :3] @ corners + f_aff[:3, 3:4]
    est = result.transform[:3, :3] @ world + result.transform[:3, 3:4]
    true = true_t[:3, :3] @ world + true_t[:3, 3:4]
    max_disp = np.linalg.norm(est - true, axis=0).max()
    u, _, vt = np.linalg.svd(result.transform[:3, :3])  # nearest rotation of the estimate
    rel = (u @ vt).T @ true_t[:3, :3]
    angle = np.rad2deg(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1)))
    assert max_disp < 1.0, (max_disp, result)
    assert angle < 1.0, angle
    assert result.iterations > 0 and result.stop_reason
    assert np.isfinite(result.metric) and result.metric < 0  # ITK reports negative MI
    assert elapsed < 20, elapsed

    # Applying the transform to the moving image aligns it with the fixed one.
    aligned = pp.resample_like(moving, fixed, transform=result.transform)
    truth = sample(f_aff, f_shape, lambda p: structured_head(p, "mr"))
    unaligned = pp.resample_like(moving, fixed)
    assert np.abs(aligned.data - truth)[body].mean() < 0.3 * np.abs(unaligned.data - truth)[body].mean()


def test_prepare_patient_with_registration():
    true_t = rotation_z(-3.0)
    true_t[:3, 3] = [-2.0, 3.0, 1.0]
    f_aff = grid((48, 56, 44), (2.0, 2.0, 2.0))
    ct = Volume(sample(f_aff, (48, 56, 44), lambda p: structured_head(p, "ct")), f_aff, "ct")
    m_aff = grid((50, 56, 40), (2.0, 2.0, 2.5))
    mr = Volume(sample(m_aff, (50, 56, 40), lambda p: structured_head(p, "mr"), np.linalg.inv(true_t)), m_aff, "mr")
    cfg = pp.PreprocessConfig(spacing_mm=2.0, image_size=64, register=True)
    prep = pp.prepare_patient(ct, mr, None, cfg)
    reg = prep.registration
    assert set(reg) == {"metric", "transform", "iterations", "stop_reason"}
    t = np.array(reg["transform"])
    assert np.abs(t[:3, 3] - true_t[:3, 3]).max() < 1.0 and np.abs(t[:3, :3] - true_t[:3, :3]).max() < 0.02
    assert prep.mr.shape == prep.ct.shape == (44, 64, 64)


def test_registering_twice_gives_the_same_transform():
    """Bit-identical, even where ITK would use several threads (their sums meet in varying order)."""
    import SimpleITK as sitk

    f_shape, f_aff = (48, 48, 40), grid((48, 48, 40), (2.5, 2.5, 2.5))
    fixed = Volume(sample(f_aff, f_shape, lambda p: structured_head(p, "ct")), f_aff, "ct")
    t = rotation_z(3.0)
    t[:3, 3] = [2.0, 1.0, -2.0]
    moving = Volume(sample(f_aff, f_shape, lambda p: structured_head(p, "mr"), transform=t), f_aff, "mr")
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(4)
    try:
        first, second = (registration.register_affine(fixed, moving) for _ in range(2))
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 4     # the caller's setting is back
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    np.testing.assert_array_equal(first.transform, second.transform)
    assert first.iterations == second.iterations


def test_affine_model_runs_and_bad_model_is_rejected():
    f_aff = grid((40, 40, 36), (3.0, 3.0, 3.0))
    fixed = Volume(sample(f_aff, (40, 40, 36), lambda p: structured_head(p, "mr")), f_aff, "mr1")
    shift = np.eye(4)
    shift[:3, 3] = [2.0, 0.0, -3.0]
    moving = Volume(sample(f_aff, (40, 40, 36), lambda p: structured_head(p, "mr"), np.linalg.inv(shift)), f_aff, "mr2")
    result = registration.register_affine(fixed, moving, model="affine", iterations=100)
    # Same contrast: the 12-dof result stays close to the true shift (MI's scale bias is small here).
    assert np.abs(result.transform[:3, 3] - shift[:3, 3]).max() < 1.0
    assert np.abs(np.linalg.svd(result.transform[:3, :3])[1] - 1).max() < 0.03
    with pytest.raises(ValueError, match="model"):
        registration.register_affine(fixed, moving, model="bspline")
