"""BiasAddConv2D / BiasAddConv2DTranspose compute what Keras' layers compute, with fewer traced ops."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling.fast.bias_conv import BiasAddConv2D, BiasAddConv2DTranspose

CASES = [
    (keras.layers.Conv2D, BiasAddConv2D, dict(filters=6, kernel_size=3)),
    (keras.layers.Conv2D, BiasAddConv2D, dict(filters=4, kernel_size=4, strides=2, padding="same")),
    (keras.layers.Conv2DTranspose, BiasAddConv2DTranspose, dict(filters=5, kernel_size=3, strides=2, padding="same")),
]


def _traced(layer, x, dy):
    """Value and gradients (input, kernel, bias) of one call, and the op count of the traced function."""
    def f(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return [y, *tape.gradient(y, [x, layer.kernel, layer.bias], output_gradients=dy)]
    fn = tf.function(f)
    ops = len(fn.get_concrete_function(x).graph.get_operations())
    return fn(x), ops


@pytest.mark.parametrize("keras_cls,ours_cls,kwargs", CASES)
def test_same_numbers_fewer_ops(keras_cls, ours_cls, kwargs):
    shape = (2, 12, 10, 3)
    ref, ours = keras_cls(**kwargs), ours_cls(**kwargs)
    ref.build(shape)
    ours.build(shape)
    rng = np.random.default_rng(0)
    ref.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in ref.get_weights()])
    ours.set_weights(ref.get_weights())
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    dy = tf.constant(rng.normal(size=ref.compute_output_shape(shape)).astype("float32"))
    (want, ref_ops), (got, our_ops) = _traced(ref, x, dy), _traced(ours, x, dy)
    for name, a, b in zip(("y", "dx", "dkernel", "dbias"), want, got):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
    assert our_ops < ref_ops


def test_weights_and_config_are_keras_conv2ds():
    """Same weight names and shapes, so checkpoints of either load into the other."""
    ref, ours = keras.layers.Conv2D(3, 3, name="c"), BiasAddConv2D(3, 3, name="c")
    ref.build((1, 8, 8, 2))
    ours.build((1, 8, 8, 2))
    assert [(w.path, w.shape) for w in ours.weights] == [(w.path, w.shape) for w in ref.weights]
    again = BiasAddConv2D.from_config(ours.get_config())
    assert again.filters == 3 and again.kernel_size == (3, 3)
