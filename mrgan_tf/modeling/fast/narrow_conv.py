"""Stride-1 convolutions into or out of one or two channels, made fast on oneDNN.

oneDNN's blocked CPU kernels compute a convolution whose result has one
channel (SynMR's last 7x7 conv forward and its weight gradient; the input
gradient of a generator's or a discriminator head's first conv) at ~14
GFLOP/s, against ~210 for the wide layers (bench/bench_convs.py): about half a
second of a full-size Algorithm-1 iteration. Here such a correlation is a
stride-``BLOCK`` convolution with ``BLOCK**2 * n`` outputs, one per output
pixel phase, followed by ``depth_to_space``: twice the FLOPs, 2-6x faster.
The layer keeps Conv2D's weights and checkpoints; the results match
``tf.nn.conv2d`` to float round-off.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mrgan_tf.modeling.fast import device, split_conv
from mrgan_tf.modeling.fast.bias_conv import BiasAddConv2D

BLOCK = 4   # output pixels per side computed by one position of the blocked conv
NARROW = 2  # channel counts at or below this take the blocked path


def _placement(k: int, block: int) -> np.ndarray:
    """0/1 [k+b-1, k+b-1, b*b, k, k]: tap (u, v) of output phase (i, j) sits at (u + i, v + j)."""
    size = k + block - 1
    p = np.zeros((size, size, block * block, k, k), np.float32)
    u, v = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    for i in range(block):
        for j in range(block):
            p[u + i, v + j, i * block + j, u, v] = 1.0
    return p


def _phase_kernel(w, block: int):
    """[k, k, C, n] -> [k+b-1, k+b-1, C, b*b*n]: output phase (i, j) sees w shifted by (i, j).

    One contraction with a constant 0/1 placement (exact: every sum has one nonzero term)
    instead of b*b pads and a stack: a handful of graph ops per call instead of ~50.
    """
    k, _, c, n = w.shape
    size = k + block - 1
    placed = tf.einsum("xypuv,uvco->xycpo", tf.constant(_placement(k, block), w.dtype), w)
    return tf.reshape(placed, [size, size, c, block * block * n])


def _static_hw(x):
    hw = x.shape[1:3]
    return tuple(hw) if None not in hw else None


def _pad_to_blocks(x, k: int, block: int):
    """Zero-pads x at the bottom and right so the blocked conv covers every output pixel."""
    hw = _static_hw(x)
    if hw is not None:                      # static shapes: plain numbers, no shape arithmetic in the graph
        out = [d - k + 1 for d in hw]
        extra = [(-o) % block for o in out]
    else:
        out = tf.shape(x)[1:3] - k + 1
        extra = (-out) % block
        out, extra = [out[0], out[1]], [extra[0], extra[1]]
    return tf.pad(x, [[0, 0], [0, extra[0]], [0, extra[1]], [0, 0]]), out


def correlate_blocked(x, w, block: int = BLOCK):
    """``tf.nn.conv2d(x, w, 1, "VALID")`` computed phase by phase (fast when w has few outputs)."""
    xp, out = _pad_to_blocks(x, w.shape[0], block)
    y = tf.nn.depth_to_space(tf.nn.conv2d(xp, _phase_kernel(w, block), block, "VALID"), block)
    return y[:, :out[0], :out[1], :]


def correlate_blocked_filter_grad(x, dy, w_shape, block: int = BLOCK):
    """The weight gradient of ``correlate_blocked``: the blocked conv's, folded back to [k, k, C, n]."""
    k, _, c, n = w_shape
    size = k + block - 1
    xp, _ = _pad_to_blocks(x, k, block)
    dyp, _ = _pad_to_blocks(dy, 1, block)
    g = tf.raw_ops.Conv2DBackpropFilter(input=xp, filter_sizes=[size, size, c, block * block * n],
                                        out_backprop=tf.nn.space_to_depth(dyp, block),
                                        strides=[1, block, block, 1], padding="VALID")
    g = tf.reshape(g, [size, size, c, block * block, n])
    return tf.einsum("xypuv,xycpo->uvco", tf.constant(_placement(k, block), g.dtype), g)


@tf.custom_gradient
def conv2d_valid(x, w):
    """``tf.nn.conv2d(x, w, 1, "VALID")`` whose narrow sides (few in or out channels) run blocked."""
    k, _, c, n = w.shape
    y = correlate_blocked(x, w) if n <= NARROW else tf.nn.conv2d(x, w, 1, "VALID")

    def grad(dy):
        if c <= NARROW:
            # Full correlation of dy with w turned 180 degrees, in and out channels swapped.
            back = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2])
            dx = correlate_blocked(tf.pad(dy, [[0, 0], [k - 1, k - 1], [k - 1, k - 1], [0, 0]]), back)
        else:
            dx = split_conv.input_grad(x, w, dy)
        if n <= NARROW:
            dw = correlate_blocked_filter_grad(x, dy, w.shape)
        else:
            dw = split_conv.filter_grad(x, dy, w.shape, split_conv.WHOLE)
        return dx, dw

    return y, grad


@keras.saving.register_keras_serializable(package="mrgan_tf")
class NarrowConv2D(BiasAddConv2D):
    """A stride-1 Conv2D for layers with one or two input or output channels.

    Same weights, names and checkpoints as ``keras.layers.Conv2D``; only the
    computation differs (``conv2d_valid``), and only on CPU (``device.cpu_kernels``). "same" padding is zero padding
    added here, as TensorFlow places it (the extra row at the bottom/right).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if any(s != 1 for s in self.strides) or any(d != 1 for d in self.dilation_rate):
            raise ValueError(f"{self.name}: NarrowConv2D takes stride 1 and no dilation")
        if self.data_format != "channels_last":
            raise ValueError(f"{self.name}: NarrowConv2D takes channels_last")

    def convolution_op(self, inputs, kernel):
        if not device.cpu_kernels():     # a GPU's conv needs no blocking: the plain op, half the FLOPs
            return super().convolution_op(inputs, kernel)
        if self.padding == "same":
            pads = [[(k - 1) // 2, k // 2] for k in self.kernel_size]
            inputs = tf.pad(inputs, [[0, 0], *pads, [0, 0]])
        # A tensor, not the variable: the custom gradient then reaches it through the read.
        return conv2d_valid(inputs, tf.convert_to_tensor(kernel))
