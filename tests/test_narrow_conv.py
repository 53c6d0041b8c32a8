"""NarrowConv2D computes what keras.layers.Conv2D computes, values and gradients."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling.fast.narrow_conv import NarrowConv2D, correlate_blocked


def _pair(filters, kernel, padding, in_shape):
    ref, ours = keras.layers.Conv2D(filters, kernel, padding=padding), NarrowConv2D(filters, kernel, padding=padding)
    ref.build(in_shape)
    ours.build(in_shape)
    rng = np.random.default_rng(0)
    ref.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in ref.get_weights()])
    ours.set_weights(ref.get_weights())
    return ref, ours


def _value_and_grads(layer, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return [y, *tape.gradient(y, [x, layer.kernel, layer.bias], output_gradients=dy)]


@pytest.mark.parametrize("filters,kernel,padding,in_shape", [
    (1, 7, "valid", (2, 37, 30, 6)),     # out_conv: one output channel, size not a multiple of the block
    (5, 7, "valid", (2, 29, 33, 1)),     # c7s1: one input channel (blocked input gradient)
    (4, 4, "same", (1, 18, 21, 2)),      # a discriminator head: two input channels, even kernel
    (2, 3, "same", (1, 9, 9, 2)),        # both sides narrow
    (6, 3, "valid", (1, 12, 12, 5)),     # neither: plain kernels
])
def test_matches_conv2d(filters, kernel, padding, in_shape):
    ref, ours = _pair(filters, kernel, padding, in_shape)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=in_shape).astype("float32"))
    dy = tf.constant(rng.normal(size=ref.compute_output_shape(in_shape)).astype("float32"))
    for name, a, b in zip(("y", "dx", "dkernel", "dbias"), _value_and_grads(ref, x, dy),
                          _value_and_grads(ours, x, dy)):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_same_inside_tf_function_with_unknown_size():
    w = tf.constant(np.random.default_rng(2).normal(size=(7, 7, 3, 1)).astype("float32"))
    f = tf.function(lambda x: correlate_blocked(x, w), input_signature=[tf.TensorSpec([None, None, None, 3])])
    x = tf.constant(np.random.default_rng(3).normal(size=(1, 23, 26, 3)).astype("float32"))
    np.testing.assert_allclose(f(x).numpy(), tf.nn.conv2d(x, w, 1, "VALID").numpy(), rtol=1e-5, atol=1e-5)


def test_checkpoint_names_equal_conv2d():
    ref, ours = _pair(1, 7, "valid", (1, 16, 16, 4))
    assert [w.path.split("/")[-1] for w in ours.weights] == [w.path.split("/")[-1] for w in ref.weights]


def test_refuses_strides():
    with pytest.raises(ValueError, match="stride 1"):
        NarrowConv2D(4, 3, strides=2)


def _ops(fn, x) -> set:
    return {op.type for op in tf.function(fn).get_concrete_function(x).graph.get_operations()}


def test_cpu_kernels_on_cpu_plain_convs_elsewhere_same_weights_and_results():
    """NarrowConv2D's blocking suits oneDNN only: with GPU kernels chosen the generator runs plain convs
    (no DepthToSpace) on the same weights, and both give the same outputs and gradients."""
    from mrgan_tf.modeling import networks
    from mrgan_tf.modeling.fast import device
    gen = networks.build_generator(4, 1, 32, name="syn_mr")
    x = tf.random.stateless_uniform([2, 32, 32, 1], [1, 2], -1, 1)

    def _grads(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = gen(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, tape.gradient(loss, x), *tape.gradient(loss, gen.trainable_variables)]

    results = {}
    for cpu in (True, False):
        with device.kernels(cpu=cpu):
            results[cpu] = [t.numpy() for t in _grads(x)]
            ops = _ops(lambda v: gen(v, training=False), tf.TensorSpec([1, 32, 32, 1]))
        assert ("DepthToSpace" in ops) == cpu, ops
    assert device.cpu_kernels() == (not tf.config.list_logical_devices("GPU"))
    for a, b in zip(results[True], results[False]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))
