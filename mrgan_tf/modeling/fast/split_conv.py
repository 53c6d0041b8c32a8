"""Large stride-1 convolutions cut into pieces where oneDNN's kernel for the whole is slow on this CPU.

The generator's residual convs (3x3, 256 -> 256 channels at 64x64 in the paper's
model) are most of an iteration's FLOPs. On 2 cores (docs/BENCHMARKS.md "Kernels
per CPU", float32), oneDNN computes them:

- on AVX2, forward, through its im2col + GEMM fallback. Where the output's height
  and width are even and both channel counts at least 128, all three passes go
  by Winograd's F(2x2, 3x3) (``winograd``): forward and gradients of the
  64x64 256 -> 256 conv 1.75x faster than the cuts below (48.7 against 85.0 ms),
  of 64x64 128 -> 128 1.24x. Elsewhere: cut into 8 bands of output rows the
  forward is 1.45x faster (43.1 against 29.6 ms; bit-identical), and the
  weight gradient summed over 4 bands of rows is 1.55x faster (52.0 against
  33.3 ms; float32 round-off apart).
- on AVX-512, forward, for one image, at 2/3 of the speed of the same conv cut
  into two 128-channel halves of its output (16.9 against 11.4 ms; bit-identical):
  a one-slice generator call is 1.28x faster. In training, where other ops run
  beside each conv, and for batches of 4 or more, the cut gains nothing, so it
  applies to batch 1 only.

Smaller convs (the demo's 64 channels, 128 channels) lose by being cut, so each
cut applies only at and above the sizes where it was measured to win. The input
gradient is oneDNN's own except under Winograd. Only on CPU (``device.cpu_kernels``) and in
float32; elsewhere ``conv2d_valid`` is ``tf.nn.conv2d(x, w, 1, "VALID")``.
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from mrgan_tf.modeling.fast import device, winograd


class Cut(NamedTuple):
    """How one conv is computed: ``whole``, in ``parts`` pieces along output ``channels`` or ``rows``, or
    (forward only, and then its gradients too) by ``winograd``."""

    along: str = "whole"
    parts: int = 1


WHOLE = Cut()


def forward_cut(batch: int | None, in_channels: int, out_channels: int, isa: str, winograd_fits: bool = False) -> Cut:
    """The forward pass's cut for a conv of these channels on ``isa`` (measured; see the module doc)."""
    if isa == "avx2" and winograd_fits and min(in_channels, out_channels) >= 128:
        return Cut("winograd")
    if in_channels >= 256 and out_channels >= 256:
        if isa == "avx512" and batch == 1:
            return Cut("channels", out_channels // 128)
        if isa == "avx2":
            return Cut("rows", 8)
    return WHOLE


def filter_grad_cut(pixels: int, in_channels: int, out_channels: int, isa: str) -> Cut:
    """The weight gradient's cut for ``pixels`` output pixels per image (measured; see the module doc)."""
    if isa == "avx2" and pixels >= 64 * 64 and min(in_channels, out_channels) >= 128:
        return Cut("rows", 4)
    return WHOLE


def _bands(rows: int, parts: int) -> list[tuple[int, int]]:
    """(start, length) of ``parts`` near-equal bands covering ``rows`` output rows."""
    parts = max(1, min(parts, rows))
    edges = [rows * i // parts for i in range(parts + 1)]
    return [(a, b - a) for a, b in zip(edges[:-1], edges[1:])]


def forward(x, w, cut: Cut):
    """``tf.nn.conv2d(x, w, 1, "VALID")``, computed by ``cut``."""
    if cut.along == "winograd":
        return winograd.forward(x, w)
    if cut.along == "channels":
        return tf.concat([tf.nn.conv2d(x, part, 1, "VALID") for part in tf.split(w, cut.parts, axis=3)], axis=3)
    if cut.along == "rows":
        k = w.shape[0]
        rows = x.shape[1] - k + 1
        return tf.concat([tf.nn.conv2d(x[:, a:a + n + k - 1], w, 1, "VALID") for a, n in _bands(rows, cut.parts)],
                         axis=1)
    return tf.nn.conv2d(x, w, 1, "VALID")


def input_grad(x, w, dy, cut: Cut = WHOLE):
    """The gradient of ``tf.nn.conv2d(x, w, 1, "VALID")`` with respect to ``x``: oneDNN's own, or by ``winograd``."""
    if cut.along == "winograd":
        return winograd.input_grad(w, dy)
    return tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                          strides=[1, 1, 1, 1], padding="VALID")


def filter_grad(x, dy, w_shape, cut: Cut):
    """The gradient of ``forward`` with respect to its weights, computed by ``cut``."""
    def whole(x, dy):
        return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=list(w_shape), out_backprop=dy,
                                               strides=[1, 1, 1, 1], padding="VALID")
    if cut.along == "winograd":
        return winograd.filter_grad(x, dy)
    if cut.along == "rows":
        k = w_shape[0]
        return tf.add_n([whole(x[:, a:a + n + k - 1], dy[:, a:a + n]) for a, n in _bands(dy.shape[1], cut.parts)])
    return whole(x, dy)


def cuts(x_shape, w_shape, dtype) -> tuple[Cut, Cut]:
    """(forward, weight-gradient) cuts for this conv here: whole unless on CPU, in float32, with static sizes."""
    k, _, c, n = w_shape
    if not device.cpu_kernels() or dtype != tf.float32 or None in (x_shape[1], x_shape[2]) or x_shape[1] < k:
        return WHOLE, WHOLE
    isa = device.vector_isa()
    pixels = (x_shape[1] - k + 1) * (x_shape[2] - w_shape[1] + 1)
    fwd = forward_cut(x_shape[0], c, n, isa, winograd.supports(x_shape, w_shape))
    return fwd, fwd if fwd.along == "winograd" else filter_grad_cut(pixels, c, n, isa)


def conv2d_valid(x, w):
    """``tf.nn.conv2d(x, w, 1, "VALID")``, cut where that is faster on this CPU (``cuts``)."""
    fwd, grad_w = cuts(x.shape, w.shape, x.dtype)
    if fwd == WHOLE and grad_w == WHOLE:
        return tf.nn.conv2d(x, w, 1, "VALID")
    if fwd.along == "winograd":     # all three passes by Winograd
        return winograd.conv2d_valid(x, w)
    return _cut_conv(x, w, fwd, grad_w)


def _cut_conv(x, w, fwd: Cut, grad_w: Cut):
    @tf.custom_gradient
    def conv(x, w):
        def grad(dy):
            return input_grad(x, w, dy), filter_grad(x, dy, w.shape, grad_w)
        return forward(x, w, fwd), grad

    return conv(x, w)
