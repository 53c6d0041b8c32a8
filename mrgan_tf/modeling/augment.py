"""Paper Sec. III.A's online augmentation as TF ops that run inside the replica step.

Flip (p = 0.5), translation (a random 256 crop of the image padded or resized to
286) and rotation in [-5, 5] degrees are composed into ONE affine map per
sample and applied with a single bilinear resampling, so the accelerator does
one pass and the image is interpolated once. Every channel of a sample gets the
same map: stack a CT/MR pair as two channels to transform them together.
Randomness is stateless, keyed on (seed, iteration, replica), so a resumed run
draws exactly what an uninterrupted one would (XLA's stateless generators differ
from TF's, so a run with --xla draws other, equally deterministic, transforms).
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

# "pad": translate with background fill; "resize": upscale then crop.
CROP_MODES = ("pad", "resize")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    crop_margin: int = 15        # 256 + 2 * 15 = 286, the paper's padded size
    crop_mode: str = "pad"       # "pad": translate with background fill; "resize": upscale then crop
    max_rotation_deg: float = 5.0
    fill_value: float = -1.0     # background in the network's [-1, 1] range

    def __post_init__(self):
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be 'pad' or 'resize', not {self.crop_mode!r}")

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.crop_margin == 0 and self.max_rotation_deg == 0


def random_affine_params(batch: int, size: int, seed, cfg: AugmentConfig):
    """Per-sample 8-vector transforms (output pixel -> input pixel) for ImageProjectiveTransformV3."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    flip = tf.where(tf.random.stateless_uniform([batch], seeds[0]) < 0.5, -1.0, 1.0) if cfg.flip \
        else tf.ones([batch])
    theta = tf.random.stateless_uniform([batch], seeds[1], -1.0, 1.0) * (cfg.max_rotation_deg * math.pi / 180)
    margin = float(cfg.crop_margin)
    shift = tf.random.stateless_uniform([batch, 2], seeds[2], -margin, margin + 1.0)
    if cfg.crop_mode == "pad":
        shift = tf.floor(shift)          # whole-pixel crop offsets, as cropping a padded image
        scale = 1.0
    else:
        scale = size / (size + 2.0 * margin)   # input distance per output pixel after upscaling
        shift = shift * scale
    c = (size - 1) / 2.0
    cos, sin = tf.cos(theta) * scale, tf.sin(theta) * scale
    # p_in = c + F R (p_out - c) + shift, with F flipping x.
    a0, a1 = flip * cos, -flip * sin
    b0, b1 = sin, cos
    a2 = c - a0 * c - a1 * c + shift[:, 0]
    b2 = c - b0 * c - b1 * c + shift[:, 1]
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def affine_resample(images, transforms, fill_value: float = 0.0):
    """Bilinear resampling of [B, H, W, C] by per-sample maps (output pixel -> input pixel).

    ``transforms`` are ImageProjectiveTransformV3's 8-vectors with c0 = c1 = 0.
    Written with gathers so that XLA (``--xla``, TPUs) compiles it, which
    ImageProjectiveTransformV3 cannot; neighbours outside the image read
    ``fill_value``, as that op's CONSTANT fill mode does.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    ys, xs = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
    t = [tf.reshape(transforms[:, i], [-1, 1, 1]) for i in range(6)]       # [B, 1, 1] each
    x_in = t[0] * xs + t[1] * ys + t[2]                      # [B, H, W]
    y_in = t[3] * xs + t[4] * ys + t[5]
    x0, y0 = tf.floor(x_in), tf.floor(y_in)
    flat = tf.reshape(images, [b, h * w, -1])
    out = 0.0
    for dy in (0.0, 1.0):
        for dx in (0.0, 1.0):
            xi, yi = x0 + dx, y0 + dy
            weight = (1.0 - tf.abs(x_in - xi)) * (1.0 - tf.abs(y_in - yi))
            inside = (xi >= 0) & (xi <= tf.cast(w - 1, tf.float32)) & (yi >= 0) & (yi <= tf.cast(h - 1, tf.float32))
            index = tf.cast(tf.clip_by_value(yi, 0.0, tf.cast(h - 1, tf.float32)) * tf.cast(w, tf.float32)
                            + tf.clip_by_value(xi, 0.0, tf.cast(w - 1, tf.float32)), tf.int32)
            values = tf.gather(flat, tf.reshape(index, [b, -1]), batch_dims=1)
            values = tf.reshape(values, shape)
            values = tf.where(inside[..., None], values, tf.cast(fill_value, images.dtype))
            out += weight[..., None] * values
    return out


def augment(images, seed, cfg: AugmentConfig):
    """Applies one random flip/translate/rotate per sample to [B, H, W, C] float images."""
    if cfg.is_identity:
        return images
    transforms = random_affine_params(tf.shape(images)[0], images.shape[1], seed, cfg)
    out = affine_resample(tf.cast(images, tf.float32), transforms, cfg.fill_value)
    return tf.cast(out, images.dtype)
