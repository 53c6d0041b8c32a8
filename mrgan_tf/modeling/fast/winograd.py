"""A 3x3 stride-1 "valid" convolution by Winograd's F(2x2, 3x3): 2.25x fewer multiplications.

On AVX2 oneDNN has no direct kernel for the forward conv TensorFlow hands it (plain
HWIO weights) and falls back to im2col + GEMM; its weight gradient for 256-channel
convs is slow too (docs/BENCHMARKS.md "Kernels per CPU"). Winograd turns each pass
into 16 batched matmuls of 1/2.25 the conv's FLOPs, which oneDNN runs at full
speed on any ISA, plus cheap linear transforms of 4x4 tiles (Lavin and Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016). float32 round-off
differs from the direct conv's (about 1e-6 relative).

The kernel and output transforms have their adjoints beside them; the gradient is written out, not taped:
the input gradient is the same Winograd conv over the zero-padded output gradient
with the kernel flipped, the weight gradient is the adjoint chain of the forward.
Output height and width must be even (the residual convs' 64x64, 32x32).
"""
from __future__ import annotations

import tensorflow as tf

# F(2x2, 3x3): y = A^T [(G w G^T) * (B^T d B)] A for each 4x4 input tile d, 2x2 output tile y.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def supports(x_shape, w_shape) -> bool:
    """Whether ``conv2d_valid`` can take these static shapes: 3x3 weights, even output height and width."""
    h, w = x_shape[1], x_shape[2]
    return (tuple(w_shape[:2]) == (3, 3) and None not in (h, w) and h >= 4 and w >= 4
            and (h - 2) % 2 == 0 and (w - 2) % 2 == 0)


def _bt(d0, d1, d2, d3):
    """B^T applied along one axis of a tile, given its 4 entries."""
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _halves(x, axis: int, size: int):
    """(entries 2i, 2i+1) of ``x``'s first ``size`` positions along ``axis`` (1 or 2), each of size/2."""
    shape = tf.shape(x)
    if axis == 1:
        return tf.unstack(tf.reshape(x[:, :size], [shape[0], size // 2, 2, shape[2], shape[3]]), axis=2)
    c = x.shape[3]
    return tf.split(tf.reshape(x[:, :, :size], [shape[0], shape[1], size // 2, 2 * c]), 2, axis=3)


def input_tiles(x):
    """B^T d B for every 4x4 tile at stride 2 of ``x`` [N, H+2, W+2, C]: [16, N*H/2*W/2, C]."""
    h, w = x.shape[1] - 2, x.shape[2] - 2
    v = []
    for rows in _bt(*_halves(x, 1, h), *_halves(x[:, 2:], 1, h)):
        v += _bt(*_halves(rows, 2, w), *_halves(rows[:, :, 2:], 2, w))
    return tf.reshape(tf.stack(v), [16, -1, x.shape[3]])


def kernel_tiles(w):
    """G w G^T for weights [3, 3, C, K]: [16, C, K]."""
    g = tf.constant(_G, w.dtype)
    return tf.reshape(tf.einsum("ai,ijck,bj->abck", g, w, g), [16, w.shape[2], w.shape[3]])


def kernel_tiles_adjoint(du):
    """The adjoint of ``kernel_tiles``: G^T du G for du [16, C, K], as weights [3, 3, C, K]."""
    g = tf.constant(_G, du.dtype)
    return tf.einsum("ai,abck,bj->ijck", g, tf.reshape(du, [4, 4, du.shape[1], du.shape[2]]), g)


def output_from_tiles(m, n, h: int, w: int):
    """A^T m A for m [16, N*H/2*W/2, K]: the output [N, H, W, K] of 2x2 tiles."""
    k = m.shape[2]
    m = tf.unstack(tf.reshape(m, [4, 4, n, h // 2, w // 2, k]))
    rows = []
    for r in (m[0] + m[1] + m[2], m[1] - m[2] - m[3]):
        r = tf.unstack(r)
        rows.append(tf.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]], axis=3))
    return tf.reshape(tf.stack(rows, axis=2), [n, h, w, k])


def output_from_tiles_adjoint(dy):
    """The adjoint of ``output_from_tiles``: A dy A^T per 2x2 tile of dy [N, H, W, K], as [16, N*H/2*W/2, K]."""
    k = dy.shape[3]
    m = []
    r0, r1 = _halves(dy, 1, dy.shape[1])
    for rows in (r0, r0 + r1, r0 - r1, -r1):
        c0, c1 = _halves(rows, 2, dy.shape[2])
        m += [c0, c0 + c1, c0 - c1, -c1]
    return tf.reshape(tf.stack(m), [16, -1, k])


def forward(x, w):
    """``tf.nn.conv2d(x, w, 1, "VALID")`` for 3x3 weights by F(2x2, 3x3); see ``supports``."""
    m = tf.matmul(input_tiles(x), kernel_tiles(w))
    return output_from_tiles(m, tf.shape(x)[0], x.shape[1] - 2, x.shape[2] - 2)


def input_grad(w, dy):
    """The gradient of ``forward`` with respect to x: the same conv over dy padded by 2, the kernel flipped."""
    flipped = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2])
    return forward(tf.pad(dy, [[0, 0], [2, 2], [2, 2], [0, 0]]), flipped)


def filter_grad(x, dy):
    """The gradient of ``forward`` with respect to w: the forward's chain of transforms, adjoint."""
    return kernel_tiles_adjoint(tf.matmul(input_tiles(x), output_from_tiles_adjoint(dy), transpose_a=True))


@tf.custom_gradient
def _conv_with_grads(x, w):
    return forward(x, w), lambda dy: (input_grad(w, dy), filter_grad(x, dy))


# A function of its own, not inlined: a model holds dozens of these convs, each a few hundred small
# ops with its gradient, and inlined they made grappler's work on the first step 2.6x longer. As one
# function per shape the graph holds each conv as a single call.
conv2d_valid = tf.function(_conv_with_grads, autograph=False, reduce_retracing=False,
                           experimental_attributes={"_noinline": True})
conv2d_valid.__doc__ = """``forward`` with its gradients by F(2x2, 3x3) too, as one function call in the graph."""
