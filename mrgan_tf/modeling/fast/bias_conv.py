"""Conv2D and Conv2DTranspose whose bias is one ``BiasAdd`` op.

Keras 3 adds a conv's bias by reshaping it to [1, 1, 1, C] and letting its
``add`` squeeze it back into ``tf.nn.bias_add``: three graph ops around the
same kernel, and four more in the gradient (two reshapes with their shape
constants). An Algorithm-1 step calls ~200 convs and differentiates ~160, so
that is ~1,200 of its ops, each paid for in tracing and in grappler. These
layers compute the same ``BiasAdd`` and ``BiasAddGrad`` directly: same weights,
names, checkpoints and numbers as the Keras layers.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from mrgan_tf.modeling.fast import split_conv


def _finish(layer, outputs):
    """Bias and activation, as Keras' conv layers apply them."""
    if layer.use_bias:
        fmt = "NHWC" if layer.data_format == "channels_last" else "NCHW"
        outputs = tf.nn.bias_add(outputs, layer.bias, data_format=fmt)
    return layer.activation(outputs) if layer.activation is not None else outputs


@keras.saving.register_keras_serializable(package="mrgan_tf")
class BiasAddConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` with its bias as one ``BiasAdd``; a stride-1 "valid" one cut per CPU (split_conv)."""

    def call(self, inputs):
        return _finish(self, self.convolution_op(inputs, self.kernel))

    def convolution_op(self, inputs, kernel):
        plain = (self.padding != "valid" or self.data_format != "channels_last" or self.groups != 1
                 or any(s != 1 for s in self.strides) or any(d != 1 for d in self.dilation_rate))
        if plain:
            return super().convolution_op(inputs, kernel)
        # A tensor, not the variable: a custom gradient then reaches it through the read.
        return split_conv.conv2d_valid(inputs, tf.convert_to_tensor(kernel))


@keras.saving.register_keras_serializable(package="mrgan_tf")
class BiasAddConv2DTranspose(layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with its bias as one ``BiasAdd``."""

    def call(self, inputs):
        outputs = ops.conv_transpose(inputs, self.kernel, strides=list(self.strides), padding=self.padding,
                                     output_padding=self.output_padding, dilation_rate=self.dilation_rate,
                                     data_format=self.data_format)
        return _finish(self, outputs)
