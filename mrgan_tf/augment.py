"""Paper Sec. III.A's online augmentation as TF ops that run inside the replica step.

Flip (p = 0.5), translation (a random 256 crop of the image padded or resized to
286) and rotation in [-5, 5] degrees are composed into ONE affine map per
sample and applied with a single bilinear resampling, so the accelerator does
one pass and the image is interpolated once. Every channel of a sample gets the
same map: stack a CT/MR pair as two channels to transform them together.
Randomness is stateless, keyed on (seed, iteration, replica), so a resumed run
draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    crop_margin: int = 15        # 256 + 2 * 15 = 286, the paper's padded size
    crop_mode: str = "pad"       # "pad": translate with background fill; "resize": upscale then crop
    max_rotation_deg: float = 5.0
    fill_value: float = -1.0     # background in the network's [-1, 1] range

    def __post_init__(self):
        if self.crop_mode not in ("pad", "resize"):
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


def augment(images, seed, cfg: AugmentConfig):
    """Applies one random flip/translate/rotate per sample to [B, H, W, C] float images."""
    if cfg.is_identity:
        return images
    shape = tf.shape(images)
    transforms = random_affine_params(shape[0], images.shape[1], seed, cfg)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=shape[1:3],
        fill_value=tf.constant(cfg.fill_value, tf.float32), interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.cast(out, images.dtype)
