"""Shapes and parameter counts of the paper's networks (Sec. II.D, Table II)."""
import numpy as np
import pytest

from mrgan_tf.modeling import networks


def test_full_size_generator_has_papers_parameter_count():
    g = networks.build_generator(ngf=64, n_blocks=9, image_size=256)
    assert g.count_params() == 11_376_129


def test_generator_keeps_size_and_range():
    g = networks.build_generator(ngf=4, n_blocks=2, image_size=32)
    y = g(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")).numpy()
    assert y.shape == (2, 32, 32, 1)
    assert np.all(np.abs(y) <= 1.0)


def test_reflection_pad_mirrors_edges():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    y = networks.ReflectionPad2D(1)(x).numpy()[0, :, :, 0]
    assert y.shape == (6, 6)
    assert y[0, 1] == x[0, 1, 0, 0] and y[1, 0] == x[0, 0, 1, 0]


@pytest.mark.parametrize("variant,patch", [("D1", 2), ("D2", 2), ("D3", 2), ("D4", 4), ("D5", 4)])
def test_discriminator_variants(variant, patch):
    d = networks.DualHeadDiscriminator(variant, image_size=32, ndf_scale=0.125)
    x = np.zeros((2, 32, 32, 1), "float32")
    assert d.unpaired(x).shape == (2, patch, patch, 1)
    assert d.paired(x, x).shape == (2, patch, patch, 1)
    spec = networks.DISCRIMINATOR_VARIANTS[variant]
    # conv layers: head + body + tail per kind; shared body counted once.
    convs = [v for v in d.trainable_variables if v.path.endswith("kernel")]
    assert len(convs) == 2 * len(spec["head"]) + len(spec["body"]) + 2 * len(spec["tail"])
    # The unpaired and paired weight sets share exactly the body.
    up = {id(v) for v in d.variables_for("unpaired")}
    pa = {id(v) for v in d.variables_for("paired")}
    assert up & pa == {id(v) for v in d.body.trainable_variables}


def test_d1_full_size_counts():
    d = networks.DualHeadDiscriminator("D1", image_size=256)
    # heads 1088 + 2112, body 2,820,928, two tails of 4,204,033.
    assert d.count_params() == 11_232_194
    assert d.paired(np.zeros((1, 256, 256, 1), "float32"), np.zeros((1, 256, 256, 1), "float32")).shape == (1, 16, 16, 1)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="D9"):
        networks.DualHeadDiscriminator("D9")


def test_instance_norm_equals_per_channel_group_norm():
    import keras
    x = np.random.default_rng(1).normal(2.0, 3.0, (3, 8, 10, 5)).astype("float32")
    ours = networks.InstanceNormalization(epsilon=1e-5)
    ref = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
    ours.build(x.shape)
    ref.build(x.shape)
    gamma = np.linspace(0.5, 2.0, 5).astype("float32")
    beta = np.linspace(-1.0, 1.0, 5).astype("float32")
    for layer in (ours, ref):
        layer.set_weights([gamma, beta])
    np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(ours(x[:1]).numpy(), ref(x[:1]).numpy(), atol=1e-5)   # batch-1 path


def test_checkpoint_of_plain_keras_layers_restores_into_the_fast_ones(tmp_path, monkeypatch):
    """Runs trained with GroupNormalization and plain Conv2D (before the speed-ups) still load."""
    import keras
    import tensorflow as tf
    x = np.random.default_rng(2).uniform(-1, 1, (2, 24, 24, 1)).astype("float32")
    with monkeypatch.context() as m:
        m.setattr(networks, "instance_norm",
                  lambda name=None: keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name))
        m.setattr(networks, "NarrowConv2D", keras.layers.Conv2D)
        old = networks.build_generator(ngf=4, n_blocks=1, image_size=24)
    assert not any(isinstance(layer, networks.InstanceNormalization) for layer in old.layers)
    for w in old.weights:     # non-trivial norm weights, so a mix-up would show
        w.assign(np.random.default_rng(3).normal(1.0, 0.3, w.shape).astype("float32") * 0.3)
    path = tf.train.Checkpoint(generator=old).write(str(tmp_path / "ckpt"))
    new = networks.build_generator(ngf=4, n_blocks=1, image_size=24)
    tf.train.Checkpoint(generator=new).read(path).assert_existing_objects_matched()
    np.testing.assert_allclose(new(x).numpy(), old(x).numpy(), atol=1e-5)
