"""On-device augmentation (paper III.A)."""
import numpy as np
import tensorflow as tf

from mrgan_tf.modeling.augment import AugmentConfig, augment


def test_identity_config_returns_input():
    x = tf.random.uniform([2, 16, 16, 1])
    cfg = AugmentConfig(flip=False, crop_margin=0, max_rotation_deg=0)
    assert augment(x, [1, 2], cfg) is x


def test_pair_channels_get_the_same_transform():
    x = tf.random.stateless_uniform([4, 32, 32, 1], [0, 1])
    pair = tf.concat([x, x], axis=-1)
    out = augment(pair, tf.constant([3, 4]), AugmentConfig())
    np.testing.assert_allclose(out[..., 0].numpy(), out[..., 1].numpy())
    assert not np.allclose(out[..., 0].numpy(), x[..., 0].numpy())


def test_flip_only_is_a_mirror_or_identity_and_both_happen():
    x = tf.random.stateless_uniform([8, 16, 16, 1], [0, 2])
    out = augment(x, tf.constant([5, 6]), AugmentConfig(flip=True, crop_margin=0, max_rotation_deg=0)).numpy()
    kinds = []
    for i in range(8):
        same, mirrored = np.allclose(out[i], x[i].numpy(), atol=1e-5), np.allclose(out[i], x[i].numpy()[:, ::-1], atol=1e-5)
        assert same != mirrored                  # one or the other (a random image is not symmetric)
        kinds.append(mirrored)
    assert 0 < sum(kinds) < 8, kinds             # p = 0.5: this seed flips some and keeps some


def _shifted(img, dy, dx, fill):
    """``img`` moved so that out[r, c] = img[r + dy, c + dx], ``fill`` where that falls outside."""
    out = np.full_like(img, fill)
    h, w = img.shape[:2]
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = img[max(0, dy):h + min(0, dy),
                                                                       max(0, dx):w + min(0, dx)]
    return out


def test_pad_crop_is_whole_pixel_shift_with_fill():
    x = tf.random.stateless_uniform([4, 16, 16, 1], [0, 3])
    cfg = AugmentConfig(flip=False, crop_margin=3, max_rotation_deg=0, fill_value=-1.0)
    out = augment(x, tf.constant([7, 8]), cfg).numpy()
    xs = x.numpy()
    shifts = []
    for i in range(4):
        matches = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                   if np.allclose(out[i], _shifted(xs[i], dy, dx, -1.0), atol=1e-5)]
        assert len(matches) == 1, "output is not a whole-pixel translation of the input with the fill value"
        shifts.append(matches[0])
    assert any(s != (0, 0) for s in shifts), shifts          # a shift happened ...
    assert (out == -1.0).any()                               # ... and revealed the fill value


def test_same_seed_same_result():
    x = tf.random.stateless_uniform([2, 16, 16, 2], [0, 4])
    a = augment(x, tf.constant([1, 1]), AugmentConfig())
    b = augment(x, tf.constant([1, 1]), AugmentConfig())
    c = augment(x, tf.constant([1, 2]), AugmentConfig())
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())


def test_gather_resampler_matches_tf_projective_transform():
    """The XLA-compilable sampler equals TF's ImageProjectiveTransformV3 (bilinear, constant fill)."""
    from mrgan_tf.modeling.augment import affine_resample, random_affine_params
    x = tf.random.stateless_uniform([4, 24, 24, 2], [0, 5])
    cfg = AugmentConfig(crop_margin=4, max_rotation_deg=20)
    transforms = random_affine_params(4, 24, tf.constant([9, 9]), cfg)
    ours = affine_resample(x, transforms, fill_value=-1.0)
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=[24, 24], fill_value=-1.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)


def test_augment_compiles_with_xla():
    """--xla compiles the whole train step, augmentation included."""
    from mrgan_tf.modeling.augment import affine_resample, random_affine_params
    x = tf.random.stateless_uniform([2, 16, 16, 2], [0, 6])
    transforms = random_affine_params(2, 16, tf.constant([1, 2]), AugmentConfig())
    compiled = tf.function(affine_resample, jit_compile=True)
    np.testing.assert_allclose(compiled(x, transforms, -1.0).numpy(), affine_resample(x, transforms, -1.0).numpy(),
                               atol=1e-5)
    pair = tf.concat([x[..., :1], x[..., :1]], axis=-1)
    out = tf.function(lambda p: augment(p, tf.constant([3, 4]), AugmentConfig()), jit_compile=True)(pair).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1])         # one map per sample under XLA too
