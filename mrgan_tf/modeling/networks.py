"""The paper's networks (Sec. II.D, Table II): ResNet generators and dual-head PatchGANs.

Instance normalisation is a small layer over TensorFlow's fused batch-norm
kernel (same weights and numbers as ``GroupNormalization(groups=-1)``, ~2x
faster forward + backward on CPU); reflection padding is a tiny layer over
``keras.ops.pad`` (no tensorflow-addons under Keras 3). Convs with a one- or
two-channel side (the generators' first and last, the discriminator heads'
first) are ``NarrowConv2D``: Conv2D's weights, computed in a way oneDNN runs
2-6x faster (mrgan_tf/modeling/fast/narrow_conv.py). Every conv adds its bias as one ``BiasAdd``
(mrgan_tf/modeling/fast/bias_conv.py): ~1,300 fewer ops in a traced training step.

The generator's two upsampling stages are the paper's fractionally-strided convs by
default; ``upsample="nearest"`` or ``"bilinear"`` makes each a 2x resize then a 3x3 conv
of the same width (Odena et al. 2016, "Deconvolution and checkerboard artifacts"): a
stride-2 3x3 transposed conv gives even and odd output pixels 1 and 2 kernel taps, a
period-2 pattern the network must learn to cancel; after a resize every pixel gets all 9.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from mrgan_tf.modeling.fast import device
from mrgan_tf.modeling.fast.bias_conv import BiasAddConv2D, BiasAddConv2DTranspose
from mrgan_tf.modeling.fast.narrow_conv import NarrowConv2D

# Generator upsampling: the paper's transposed conv, or a resize (this interpolation) then a conv.
UPSAMPLING = ("transpose", "nearest", "bilinear")

# Table II: extra head, shared network (stride-2 convs) and extra tail, in filters.
DISCRIMINATOR_VARIANTS = {
    "D1": dict(head=(64,), body=(64, 128, 256, 512), tail=(512, 1)),
    "D2": dict(head=(64, 64), body=(64, 128, 256, 512), tail=(512, 512, 1)),
    "D3": dict(head=(64, 64), body=(64, 128, 256, 512), tail=(512, 512, 512, 1)),
    "D4": dict(head=(64,), body=(128, 256, 512), tail=(512, 1)),
    "D5": dict(head=(64,), body=(128, 256, 512), tail=(1,)),
}


@keras.saving.register_keras_serializable(package="mrgan_tf")
class ReflectionPad2D(layers.Layer):
    """Pads H and W by mirroring, as Johnson et al.'s generator does."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + 2 * self.pad  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="mrgan_tf")
class InstanceNormalization(layers.Layer):
    """Per-sample, per-channel normalisation over H and W with a learned scale and offset.

    With batch statistics, batch norm of one image *is* instance norm, so the
    [B, H, W, C] input is viewed as one image of B*C channels and fed to
    ``FusedBatchNormV3`` (one pass forward, one fused gradient kernel; oneDNN on
    CPU). Statistics are in float32 whatever the compute dtype; the kernel runs
    in training mode (batch statistics), which op determinism allows. Weights
    are named gamma/beta, as GroupNormalization's, so checkpoints of either load
    into the other.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones", name="gamma", autocast=False)
        self.beta = self.add_weight(shape=(shape[-1],), initializer="zeros", name="beta", autocast=False)

    def call(self, x):
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        single, flat = x.shape[0] == 1, pixels_as_batch()
        if not single or flat:   # static sizes where known: fewer ops to trace
            shape = x.shape.as_list() if x.shape.is_fully_defined() else tf.shape(x)
            b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        if not single:      # [B, H, W, C] -> [1, H, W, B*C]: every (sample, channel) is a channel
            x = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, b * c])
            gamma, beta = tf.tile(gamma, [b]), tf.tile(beta, [b])
        if flat:            # the same statistics over [H*W, 1, 1, channels]: oneDNN's fast path on AVX2
            x = tf.reshape(x, [h * w, 1, 1, -1])
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon, is_training=True)
        if not single:
            y = tf.transpose(tf.reshape(y, [h, w, b, c]), [2, 0, 1, 3])
        elif flat:
            y = tf.reshape(y, shape)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def pixels_as_batch() -> bool:
    """Whether instance norm hands oneDNN its pixels as the batch: on AVX2 its batch norm over [1, H, W, C]
    is 5-10x slower forward than over [H*W, 1, 1, C] (docs/BENCHMARKS.md "Kernels per CPU"); on AVX-512
    the first is as fast or faster."""
    return device.cpu_kernels() and device.vector_isa() == "avx2"


def instance_norm(name=None):
    return InstanceNormalization(epsilon=1e-5, name=name)


def _residual_block(x, filters: int, name: str):
    y = ReflectionPad2D(1)(x)
    y = BiasAddConv2D(filters, 3, name=f"{name}_conv1")(y)
    y = layers.ReLU()(instance_norm(f"{name}_in1")(y))
    y = ReflectionPad2D(1)(y)
    y = BiasAddConv2D(filters, 3, name=f"{name}_conv2")(y)
    y = instance_norm(f"{name}_in2")(y)
    return layers.Add()([x, y])


def _upsampling(x, filters: int, mode: str, name: str):
    """x2 in H and W to ``filters`` channels: a transposed conv, or a resize then a reflection-padded conv.

    The conv keeps the name ``name`` either way (its kernel is [3, 3, in, out] after a resize,
    [3, 3, out, in] when transposed: a checkpoint of one mode does not restore into the other).
    """
    if mode == "transpose":
        return BiasAddConv2DTranspose(filters, 3, strides=2, padding="same", name=name)(x)
    if mode not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {mode!r}; choose from {list(UPSAMPLING)}")
    x = layers.UpSampling2D(2, interpolation=mode, name=f"{name}_resize")(x)
    return BiasAddConv2D(filters, 3, name=name)(ReflectionPad2D(1)(x))


def build_generator(ngf: int = 64, n_blocks: int = 9, image_size: int | None = 256,
                    input_nc: int = 1, output_nc: int = 1, name: str = "generator",
                    upsample: str = "transpose") -> keras.Model:
    """Johnson et al.'s ResNet generator: c7s1-ngf, d2ngf, d4ngf, n x R4ngf, u2ngf, ungf, c7s1-output_nc.

    Input [B, H, W, input_nc] and output [B, H, W, output_nc] are in [-1, 1]
    (as pytorch-CycleGAN-and-pix2pix's factories; a 2.5D stack only widens the
    first and last conv); H and W must be multiples of 4. With ngf=64, 9 blocks
    and 1 channel in and out it has 11,376,129 weights, whichever ``upsample`` (one of
    ``UPSAMPLING``) makes the two u-stages.
    """
    inp = keras.Input((image_size, image_size, input_nc), name="image")
    x = ReflectionPad2D(3)(inp)
    x = NarrowConv2D(ngf, 7, name="c7s1")(x)
    x = layers.ReLU()(instance_norm("c7s1_in")(x))
    for i, f in enumerate((ngf * 2, ngf * 4)):
        x = BiasAddConv2D(f, 3, strides=2, padding="same", name=f"down{i}")(x)
        x = layers.ReLU()(instance_norm(f"down{i}_in")(x))
    for i in range(n_blocks):
        x = _residual_block(x, ngf * 4, name=f"res{i}")
    for i, f in enumerate((ngf * 2, ngf)):
        x = _upsampling(x, f, upsample, name=f"up{i}")
        x = layers.ReLU()(instance_norm(f"up{i}_in")(x))
    x = ReflectionPad2D(3)(x)
    x = NarrowConv2D(output_nc, 7, name="out_conv")(x)
    out = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(inp, out, name=name)


def _conv_stack(filters, strides: int, first_plain: bool, last_plain: bool, name: str, first_norm: bool = True):
    """4x4 padded convs; instance norm + leaky ReLU except on the first and last conv of D.

    ``first_norm=False`` drops the instance norm after the stack's first conv (keeping its leaky ReLU).
    """
    stack = []
    for i, f in enumerate(filters):
        plain_in = first_plain and i == 0
        is_last = last_plain and i == len(filters) - 1
        conv = NarrowConv2D if plain_in else BiasAddConv2D    # the head's first conv sees 1-2 channels
        stack.append(conv(f, 4, strides=strides, padding="same", name=f"{name}_conv{i}",
                          dtype="float32" if is_last else None))
        if is_last:
            continue
        if not plain_in and (first_norm or i):
            stack.append(instance_norm(f"{name}_in{i}"))
        stack.append(layers.LeakyReLU(0.2))
    return stack


class DualHeadDiscriminator(keras.Model):
    """PatchGAN with an extra head and tail per input kind (paper Fig. 4).

    ``unpaired(x)`` judges one image (``input_nc`` channels); ``paired(cond, x)``
    judges a (condition, image) pair (2 x ``input_nc`` channels). Both share the
    strided body; each returns patch logits [B, h, w, 1] in float32.
    ``body_first_norm=False`` leaves the body's first conv without instance norm, as
    the authors' code (``Discriminator.share_net``: conv1 then leaky ReLU) and pix2pix's C64 do.
    """

    def __init__(self, variant: str = "D1", image_size: int | None = 256, input_nc: int = 1,
                 ndf_scale: float = 1.0, body_first_norm: bool = True, name: str = "discriminator", **kwargs):
        super().__init__(name=name, **kwargs)
        if variant not in DISCRIMINATOR_VARIANTS:
            raise ValueError(f"unknown discriminator variant {variant!r}; choose from {sorted(DISCRIMINATOR_VARIANTS)}")
        spec = DISCRIMINATOR_VARIANTS[variant]
        width = lambda fs: tuple(max(1, int(round(f * ndf_scale))) if f != 1 else 1 for f in fs)  # noqa: E731
        self.variant = variant
        self.heads = {
            kind: keras.Sequential(_conv_stack(width(spec["head"]), 1, True, False, f"{kind}_head"),
                                   name=f"{kind}_head")
            for kind in ("unpaired", "paired")
        }
        self.body = keras.Sequential(_conv_stack(width(spec["body"]), 2, False, False, "body", body_first_norm),
                                      name="body")
        self.tails = {
            kind: keras.Sequential(_conv_stack(width(spec["tail"]), 1, False, True, f"{kind}_tail"),
                                   name=f"{kind}_tail")
            for kind in ("unpaired", "paired")
        }
        # Track the dict-held sub-models as attributes so their weights are the model's.
        self.unpaired_head, self.paired_head = self.heads["unpaired"], self.heads["paired"]
        self.unpaired_tail, self.paired_tail = self.tails["unpaired"], self.tails["paired"]
        s = image_size
        self.unpaired_head.build((None, s, s, input_nc))
        self.paired_head.build((None, s, s, 2 * input_nc))
        head_out = self.unpaired_head.compute_output_shape((None, s, s, input_nc))
        self.body.build(head_out)
        body_out = self.body.compute_output_shape(head_out)
        self.unpaired_tail.build(body_out)
        self.paired_tail.build(body_out)
        self.built = True

    def _judge(self, kind: str, x, training=None):
        return self.tails[kind](self.body(self.heads[kind](x, training=training), training=training),
                                training=training)

    def unpaired(self, x, training=None):
        return self._judge("unpaired", x, training)

    def paired(self, cond, x, training=None):
        return self._judge("paired", ops.concatenate([cond, x], axis=-1), training)

    def call(self, x, training=None):
        return self.unpaired(x, training)

    def variables_for(self, kind: str):
        """Head + shared body + tail: the only weights an update of this kind may change."""
        return (self.heads[kind].trainable_variables + self.body.trainable_variables
                + self.tails[kind].trainable_variables)
