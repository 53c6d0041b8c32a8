"""F(2x2, 3x3) Winograd convolution: the three passes against TensorFlow's conv, the adjoints, what it takes."""
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling.fast import winograd


def _rng_tensor(rng, shape, scale=1.0):
    return tf.constant(rng.normal(0, scale, size=shape).astype("float32"))


@pytest.mark.parametrize("shape", [(1, 4, 4, 1, 1), (2, 10, 8, 3, 5), (1, 34, 18, 16, 32)])
def test_three_passes_equal_tensorflows_conv(shape):
    n, h, w_, c, k = shape
    rng = np.random.default_rng(sum(shape))
    x, w = _rng_tensor(rng, (n, h, w_, c)), _rng_tensor(rng, (3, 3, c, k), 0.2)
    dy = _rng_tensor(rng, (n, h - 2, w_ - 2, k))
    out = {}
    for name, conv in (("ref", lambda x, w: tf.nn.conv2d(x, w, 1, "VALID")), ("winograd", winograd.conv2d_valid)):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
        out[name] = [y, *tape.gradient(y, [x, w], output_gradients=dy)]
    for a, b, what in zip(out["winograd"], out["ref"], ("y", "dx", "dw")):
        scale = float(tf.reduce_max(tf.abs(b)))
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5 * scale, rtol=0, err_msg=what)


def test_adjoints_are_adjoint():
    """<T a, b> == <a, T* b> for the kernel and output transforms (the input transform needs none:
    the input gradient is a Winograd conv of its own)."""
    rng = np.random.default_rng(3)
    w, du = _rng_tensor(rng, (3, 3, 4, 5)), _rng_tensor(rng, (16, 4, 5))
    np.testing.assert_allclose(tf.reduce_sum(winograd.kernel_tiles(w) * du).numpy(),
                               tf.reduce_sum(w * winograd.kernel_tiles_adjoint(du)).numpy(), rtol=1e-5)
    m, dy = _rng_tensor(rng, (16, 2 * 3 * 4, 5)), _rng_tensor(rng, (2, 6, 8, 5))
    np.testing.assert_allclose(tf.reduce_sum(winograd.output_from_tiles(m, 2, 6, 8) * dy).numpy(),
                               tf.reduce_sum(m * winograd.output_from_tiles_adjoint(dy)).numpy(), rtol=1e-5)


def test_supports_only_3x3_with_even_output():
    assert winograd.supports((1, 66, 66, 256), (3, 3, 256, 256))
    assert winograd.supports((4, 10, 6, 8), (3, 3, 8, 8))
    assert not winograd.supports((1, 66, 67, 256), (3, 3, 256, 256))     # output width 65
    assert not winograd.supports((1, 66, 66, 256), (5, 5, 256, 256))
    assert not winograd.supports((1, None, 66, 256), (3, 3, 256, 256))
    assert not winograd.supports((1, 3, 3, 256), (3, 3, 256, 256))


def test_runs_in_a_graph_with_unknown_batch():
    w = tf.constant(np.random.default_rng(5).normal(size=(3, 3, 2, 3)).astype("float32"))
    f = tf.function(winograd.conv2d_valid).get_concrete_function(tf.TensorSpec([None, 8, 6, 2]), w)
    x = tf.random.stateless_normal((3, 8, 6, 2), seed=(1, 1))
    np.testing.assert_allclose(f(x, w).numpy(), tf.nn.conv2d(x, w, 1, "VALID").numpy(), atol=1e-5)
