"""Slice planes and 2.5D through preprocessing, records and synthesis; fusion of several models."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mrgan_tf import preprocess as pp
from mrgan_tf.inference import predictors, synthesis
from mrgan_tf.io.volumes import Volume, VolumeError
from mrgan_tf.preprocess import context

CFG = pp.PreprocessConfig(spacing_mm=2.0, image_size=32, min_foreground=0.0)


def head(shape=(20, 24, 16)) -> Volume:
    """An ellipsoid of soft tissue with a bone rim in air, on an anisotropic grid off the origin."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grid))
    ct = np.where(r < 0.8, 30.0, -1000.0) + np.where((r > 0.6) & (r < 0.8), 60.0 * grid[0], 0.0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, -24.0, 5.0]
    return Volume(ct.astype(np.float32), affine, "head.nii.gz")


@pytest.mark.parametrize("axis", pp.SLICE_AXES)
def test_to_plane_round_trip_keeps_world_positions(axis):
    vol = head()
    vol = Volume(vol.data, vol.affine @ np.diag([1.0, 1.5, 0.5, 1.0]), vol.source)
    turned = pp.to_plane(vol, axis)
    back = pp.from_plane(turned, axis)
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine)
    np.testing.assert_array_equal(pp.from_plane_array(pp.to_plane_array(vol.data, axis), axis), vol.data)
    # The same voxel sits at the same world point in both index orders.
    i = (3, 5, 7)
    j = tuple(i[a] for a in pp.PLANE_AXES[axis])
    assert turned.data[j] == vol.data[i]
    np.testing.assert_allclose(turned.affine @ [*j, 1], vol.affine @ [*i, 1])


def test_planes_cut_the_expected_slices():
    vol = head()
    cor = pp.prepare_patient(vol, None, None, dataclasses.replace(CFG, slice_axis="coronal"))
    sag = pp.prepare_patient(vol, None, None, dataclasses.replace(CFG, slice_axis="sagittal"))
    ax = pp.prepare_patient(vol, None, None, CFG)
    assert ax.shape == (20, 24, 16) and cor.shape == (20, 16, 24) and sag.shape == (24, 16, 20)
    assert len(ax.ct) == 16 and len(cor.ct) == 24 and len(sag.ct) == 20
    # The same body voxels whatever the plane: the mask is found before the volume is turned.
    assert ax.mask.sum() == cor.mask.sum() == sag.mask.sum()


def identity(cfg: pp.PreprocessConfig, source: str) -> predictors.Predictor:
    """A 'ct2mr' model that returns its input slice (through stacking and averaging for 2.5D)."""
    import tensorflow as tf
    fn = tf.function(context.volume_generator(lambda x: x, cfg.context_slices))
    return predictors.Predictor("ct2mr", cfg, source, lambda x: fn(tf.constant(x)).numpy())


@pytest.mark.parametrize("axis,k", [("coronal", 0), ("sagittal", 1), ("axial", 2)])
def test_every_plane_and_depth_restacks_onto_the_input_grid(axis, k):
    vol = head()
    want, _ = synthesis.synthesize_volume(identity(CFG, "axial"), vol)
    got, info = synthesis.synthesize_volume(identity(dataclasses.replace(CFG, slice_axis=axis, context_slices=k),
                                                     axis), vol)
    assert got.shape == vol.shape
    np.testing.assert_allclose(got.data, want.data, atol=1e-3)
    assert want.data.max() > 200       # the window's top: not an empty volume


def test_chunked_stack_prediction_equals_the_whole_volume():
    import tensorflow as tf

    from mrgan_tf.modeling import networks
    k = 1
    gen = networks.build_generator(ngf=4, n_blocks=1, image_size=32, input_nc=3, output_nc=3)
    cfg = dataclasses.replace(CFG, context_slices=k)
    fn = tf.function(context.volume_generator(lambda x: gen(x, training=False), k))
    pred = predictors.Predictor("ct2mr", cfg, "g", lambda x: fn(tf.constant(x)).numpy())
    stack = np.random.default_rng(0).uniform(0, 1, (9, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(pred.predict01(stack, batch_size=2), pred.predict01(stack, batch_size=64),
                               atol=1e-6)


def test_fusion_takes_the_voxelwise_median_or_mean():
    vol = head()
    members = [identity(dataclasses.replace(CFG, slice_axis=a), a) for a in pp.SLICE_AXES]
    single, _ = synthesis.synthesize_volume(members[0], vol)
    fused, info = synthesis.synthesize_volume(predictors.Fusion(tuple(members)), vol)
    np.testing.assert_allclose(fused.data, single.data, atol=1e-3)
    assert info["fusion"] == {"method": "median", "models": 3, "predictions": 3, "augmentations": ["identity"],
                              "planes": list(pp.SLICE_AXES), "context_slices": [0, 0, 0]}

    class Offset(predictors.Predictor):
        def predict01(self, stack01, batch_size=16, progress=False):
            return np.clip(stack01 - float(self.source), 0, 1)

    offsets = [Offset("ct2mr", CFG, str(d), None) for d in (0.0, 0.1, 0.5)]   # median 0.1, mean 0.2
    med, _ = synthesis.synthesize_volume(predictors.Fusion(tuple(offsets)), vol)
    mean, _ = synthesis.synthesize_volume(predictors.Fusion(tuple(offsets), "mean"), vol)
    inside = single.data > 254.0                   # voxels at the window's top (1.0)
    np.testing.assert_allclose(med.data[inside], 0.9 * 255, atol=0.05)
    np.testing.assert_allclose(mean.data[inside], (1 + 0.9 + 0.5) / 3 * 255, atol=0.05)


def test_fusion_refusals_name_both_values():
    a = identity(CFG, "model_a")
    with pytest.raises(predictors.SynthesisError, match=r"at least two models, got 1 \(model_a\)"):
        predictors.Fusion((a,))
    b = identity(dataclasses.replace(CFG, bits=16, slice_axis="coronal"), "model_b")
    with pytest.raises(predictors.SynthesisError, match=r"model_b: trained with other preprocessing than model_a "
                                                        r"\(bits=16 vs 8\)"):
        predictors.Fusion((a, b))
    with pytest.raises(predictors.SynthesisError, match="--fusion must be one of median, mean"):
        predictors.Fusion((a, a), "max")


def test_a_volume_thinner_than_a_stack_is_refused_naming_it():
    thin = identity(dataclasses.replace(CFG, context_slices=9), "deep")
    with pytest.raises(VolumeError, match=r"head.nii.gz: --context_slices=9 needs stacks of 19 slices but the "
                                          r"volume has 16 axial slices"):
        synthesis.synthesize_volume(thin, head())


@pytest.fixture(scope="module")
def two_patients(tmp_path_factory):
    from conftest import add_patient
    root = tmp_path_factory.mktemp("planes") / "root"
    for i in range(2):
        add_patient(root, f"p{i}", seed=i)
    return root


def test_records_carry_edge_clamped_stacks_of_the_chosen_plane(two_patients, tmp_path):
    from mrgan_tf.records.make_records import make_records
    from mrgan_tf.records.spec import DatasetSpec
    from tfrecords_tools import reader
    cfg = pp.PreprocessConfig(spacing_mm=2.0, image_size=64, min_foreground=0.0)
    flat = dataclasses.replace(cfg, slice_axis="coronal")
    deep = dataclasses.replace(flat, context_slices=1)
    for name, c in (("flat", flat), ("deep", deep)):
        make_records(two_patients, tmp_path / name, c, test_patients=1, workers=0, progress=False)
    spec = DatasetSpec.load(tmp_path / "deep")
    assert spec.preprocess.context_slices == 1 and spec.preprocess.slice_axis == "coronal"
    by_slice = lambda d: {int(e["slice_index"]): e for e in reader.iterate(tmp_path / d, "paired_train")}  # noqa
    f, d = by_slice("flat"), by_slice("deep")
    assert sorted(f) == sorted(d) and int(next(iter(d.values()))["num_slices"]) == 48   # the head's y axis
    some = next(iter(d.values()))
    assert some["ct"].shape == (64, 64, 3) and some["mask"].shape == (64, 64, 1)
    checked = 0
    for z in d:
        np.testing.assert_array_equal(d[z]["ct"][..., 1], f[z]["ct"][..., 0])
        for j, n in ((0, z - 1), (2, z + 1)):
            if n in f:
                np.testing.assert_array_equal(d[z]["mr"][..., j], f[n]["mr"][..., 0])
                checked += 1
    assert checked > 40
    from mrgan_tf.modeling import batch as batch_layout
    from mrgan_tf.training import data
    batch = next(iter(data.training_dataset(spec, "paired", 2, context_slices=1)))
    assert batch.shape == (2, 64, 64, 12)
    _, _, p_ct, p_mr = batch_layout.unpack(batch, 3)
    assert float(p_ct.numpy().max()) > 0 and float(p_mr.numpy().max()) > 0


def test_context_deeper_than_the_volume_is_refused_naming_the_file(two_patients, tmp_path):
    from mrgan_tf.records.make_records import MakeRecordsError, make_records
    cfg = pp.PreprocessConfig(spacing_mm=2.0, image_size=64, context_slices=15)
    with pytest.raises(MakeRecordsError, match=r"p\d/ct.nii.gz: --context_slices=15 needs stacks of 31 slices "
                                               r"but the volume has 30 axial slices"):
        make_records(two_patients, tmp_path / "out", cfg, test_patients=1, workers=0, progress=False)


def test_evaluation_refuses_a_model_of_another_plane_or_depth_naming_both():
    from mrgan_tf.evaluation.grid import check_preprocessing
    from mrgan_tf.evaluation.patients import EvaluationError
    model = identity(dataclasses.replace(CFG, slice_axis="sagittal", context_slices=1), "sag")
    with pytest.raises(EvaluationError, match=r"context_slices 1 \(model\) vs 0 \(test data\); slice_axis "
                                              r"'sagittal' \(model\) vs 'axial' \(test data\)"):
        check_preprocessing({"m": "runs/sag"}, {"m": {"ct2mr": model}}, CFG, "records/dataset.json")
