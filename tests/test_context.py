"""2.5D stacks: neighbour stacking and overlap averaging (numpy and TF twins), the packed batch, a stack model."""
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling import batch as batch_layout
from mrgan_tf.preprocess import PreprocessConfig, context
from mrgan_tf.records.spec import DatasetSpec
from mrgan_tf.training import data


def volume(n=5, s=4):
    return np.arange(n * s * s, dtype=np.float32).reshape(n, s, s)


def test_neighbour_stack_is_edge_clamped():
    v = volume()
    st = context.neighbour_stack(v, 1)
    assert st.shape == (5, 4, 4, 3)
    np.testing.assert_array_equal(st[0, ..., 0], v[0])      # clamped below
    np.testing.assert_array_equal(st[0, ..., 2], v[1])
    np.testing.assert_array_equal(st[2, ..., 0], v[1])
    np.testing.assert_array_equal(st[4, ..., 2], v[4])      # clamped above
    np.testing.assert_array_equal(context.centre_slice(st)[..., 0], v)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_average_overlaps_inverts_stacking_and_tf_twins_agree(k):
    v = volume(6)
    st = context.neighbour_stack(v, k)
    np.testing.assert_allclose(context.average_overlaps(st, k), v)
    st_tf = context.neighbour_stack_tf(tf.constant(v[..., None]), k).numpy()
    np.testing.assert_array_equal(st_tf, st)
    noisy = st + np.random.default_rng(0).normal(size=st.shape).astype(np.float32)
    np.testing.assert_allclose(context.average_overlaps_tf(tf.constant(noisy), k).numpy()[..., 0],
                               context.average_overlaps(noisy, k), rtol=1e-5, atol=1e-4)


def test_average_overlaps_means_each_slice_predictions():
    pred = np.zeros((3, 1, 1, 3), np.float32)
    pred[1, ..., 0] = 3.0      # stack 1 says slice 0 is 3; stacks 0 (twice, clamped) say 0
    assert context.average_overlaps(pred, 1)[0, 0, 0] == pytest.approx(1.0)


def test_pack_unpack_round_trip_and_wrong_depth():
    parts = [tf.fill([2, 4, 4, 3], float(i)) for i in range(4)]
    batch = batch_layout.pack(*parts)
    assert batch.shape[-1] == 12
    for got, want in zip(batch_layout.unpack(batch, 3), parts):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(ValueError, match="1-channel images has 4 channels, got 12"):
        batch_layout.unpack(batch, 1)


def test_layout_defaults_stay_out_of_the_spec():
    assert "context_slices" not in PreprocessConfig().to_dict()
    assert "slice_axis" not in PreprocessConfig().to_dict()
    cfg = PreprocessConfig(context_slices=2, slice_axis="coronal")
    assert cfg.channels == 5
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.without_layout() == PreprocessConfig().without_layout()
    with pytest.raises(ValueError, match="context_slices must be an integer >= 0"):
        PreprocessConfig(context_slices=-1)
    with pytest.raises(ValueError, match="slice_axis must be one of"):
        PreprocessConfig(slice_axis="oblique")


@pytest.fixture(scope="module")
def stack_model(tiny_model_factory):
    return tiny_model_factory("mrgan", context_slices=1)


def test_stack_model_maps_stacks_to_stacks_and_trains(stack_model):
    m = stack_model
    assert m.syn_mr.input_shape == (None, 32, 32, 3) and m.syn_mr.output_shape == (None, 32, 32, 3)
    assert m.dis_mr.paired_head.input_shape == (None, 32, 32, 6)
    batch = tf.random.stateless_uniform([2, 32, 32, 12], [1, 2], 0, 255)
    before = m.iteration.numpy()
    logs = m.train_step(batch)
    assert m.iteration.numpy() == before + 1
    assert all(np.isfinite(v.numpy()) for v in logs.values())


def test_records_of_another_depth_are_refused(tiny_records):
    with pytest.raises(ValueError, match=r"records have context_slices=0 but the model takes context_slices=1"):
        data.training_dataset(tiny_records, "mrgan", 2, context_slices=1)


def test_a_run_resumes_only_on_records_of_its_depth_and_plane(tmp_path, tiny_records):
    import dataclasses
    import json
    import shutil

    from mrgan_tf.modeling.mrgan import MRGANConfig
    from mrgan_tf.training import checkpoints
    flat = MRGANConfig(image_size=32)
    checkpoints.save_run_config(str(tmp_path / "run"), flat, tiny_records.root)
    checkpoints.check_resume_layout(str(tmp_path / "run"), tiny_records.preprocess, tiny_records.root)   # fine
    deep = dataclasses.replace(tiny_records.preprocess, context_slices=1)
    with pytest.raises(checkpoints.RunConfigError, match=r"run.json: the run was trained with context_slices=0 "
                                                         r"but .* has context_slices=1"):
        checkpoints.check_resume_layout(str(tmp_path / "run"), deep, tiny_records.root)
    coronal = tmp_path / "coronal"
    shutil.copytree(tiny_records.root, coronal)
    spec = json.loads((coronal / "dataset.json").read_text())
    spec["preprocess"]["slice_axis"] = "coronal"
    (coronal / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(checkpoints.RunConfigError, match=r"trained on axial slices but .* holds coronal slices"):
        checkpoints.check_resume_layout(str(tmp_path / "run"), DatasetSpec.load(coronal).preprocess, str(coronal))


def test_image_panel_and_validation_show_a_stack_model_centre_slice(stack_model, tmp_path):
    import glob

    from mrgan_tf.training import callbacks, validation
    fixed = {k: tf.random.stateless_uniform([2, 32, 32, 3], [i, 5], -1, 1) for i, k in enumerate(("ct", "mr"))}
    monitor = callbacks.TrainingMonitor(str(tmp_path), 1, 1, fixed)
    monitor.set_model(stack_model)
    monitor.write_images(1)
    assert glob.glob(str(tmp_path / "logs" / "train" / "events.out.tfevents.*"))
    stacks = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    pred = validation._predict01(stack_model.syn_mr, stacks, batch_size=2)
    want = (context.centre_slice(stack_model.syn_mr(stacks * 2 - 1, training=False).numpy())[..., 0] + 1) / 2
    assert pred.shape == (3, 32, 32)
    np.testing.assert_allclose(pred, want, atol=1e-5)


@pytest.mark.parametrize("k", [0, 1])
def test_flat_stacks_come_out_as_background_whatever_the_batch_size(k):
    """Air-only slices: instance norm would turn float rounding into their whole output, so the
    volume would change with the batch size (by 27 of 255 at demo size before they were blanked)."""
    from mrgan_tf.inference.predictors import Predictor, _keras_fn
    from mrgan_tf.modeling import networks
    gen = networks.build_generator(16, 3, 128, input_nc=2 * k + 1, output_nc=2 * k + 1, name="syn_mr")
    cfg = PreprocessConfig(image_size=128, context_slices=k)
    pred = Predictor("ct2mr", cfg, "test", _keras_fn(gen, cfg))
    yy, xx = np.mgrid[-1:1:128j, -1:1:128j]
    head = np.where(xx ** 2 + yy ** 2 < 0.5, 0.4, 0.0).astype(np.float32)
    stack = np.stack([np.zeros_like(head)] * 3 + [head, head * 0.8] + [np.zeros_like(head)] * 3)
    one_by_one, whole = pred.predict01(stack, batch_size=1), pred.predict01(stack, batch_size=64)
    np.testing.assert_allclose(one_by_one, whole, atol=1e-4)
    flat = [0, 7] if k else [0, 1, 2, 5, 6, 7]          # k = 1: stacks of slices 0 and 7 are all air
    assert np.all(whole[flat] == 0.0)                  # the 0..1 scale's background
    assert whole[3].std() > 0
