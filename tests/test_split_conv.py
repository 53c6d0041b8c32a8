"""The per-CPU cuts of split_conv and the instance norm's AVX2 view compute what the plain ops compute."""
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling import networks
from mrgan_tf.modeling.fast import device, split_conv
from mrgan_tf.modeling.fast.bias_conv import BiasAddConv2D
from mrgan_tf.modeling.fast.split_conv import Cut


def _conv_and_grads(conv, x, w, dy):
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = conv(x, w)
    return [y, *tape.gradient(y, [x, w], output_gradients=dy)]


@pytest.mark.parametrize("isa,h,c,n,cuts", [
    ("avx512", 6, 256, 256, (split_conv.WHOLE, split_conv.WHOLE)),     # batch 2: no cut on AVX-512
    ("avx2", 12, 256, 256, (Cut("rows", 8), split_conv.WHOLE)),
    ("avx2", 66, 128, 128, (split_conv.WHOLE, Cut("rows", 4))),     # output width 65: no Winograd
    ("avx2", 66, 256, 256, (Cut("rows", 8), Cut("rows", 4))),
    ("avx2", 10, 128, 256, (Cut("winograd"), Cut("winograd"))),   # square, even: Winograd
    ("avx512", 66, 128, 128, (split_conv.WHOLE, split_conv.WHOLE)),
])
def test_cut_convs_match_the_plain_conv(isa, h, c, n, cuts):
    rng = np.random.default_rng(0)
    width = h if cuts[0].along == "winograd" else h + 1
    x = tf.constant(rng.normal(size=(2, h, width, c)).astype("float32"))
    w = tf.constant(rng.normal(0, 0.05, size=(3, 3, c, n)).astype("float32"))
    dy = tf.constant(rng.normal(size=(2, h - 2, width - 2, n)).astype("float32"))
    with device.kernels(cpu=True, isa=isa):
        assert split_conv.cuts(x.shape, w.shape, tf.float32) == cuts
        ours = _conv_and_grads(split_conv.conv2d_valid, x, w, dy)
    ref = _conv_and_grads(lambda x, w: tf.nn.conv2d(x, w, 1, "VALID"), x, w, dy)
    for a, b, name in zip(ours, ref, ("y", "dx", "dw")):   # dw sums 8,000 products: AVX2's order differs
        scale = float(tf.reduce_max(tf.abs(b)))
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5 * scale, rtol=0, err_msg=name)
    if cuts[0].along in ("rows", "channels"):    # these forward cuts are exact: every output is the same sum
        np.testing.assert_array_equal(ours[0].numpy(), ref[0].numpy())


def test_avx512_cuts_one_image_only():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(1, 6, 7, 256)).astype("float32"))
    w = tf.constant(rng.normal(0, 0.05, size=(3, 3, 256, 256)).astype("float32"))
    with device.kernels(cpu=True, isa="avx512"):
        assert split_conv.cuts(x.shape, w.shape, tf.float32) == (Cut("channels", 2), split_conv.WHOLE)
        ours = split_conv.conv2d_valid(x, w)
    np.testing.assert_array_equal(ours.numpy(), tf.nn.conv2d(x, w, 1, "VALID").numpy())


def test_no_cut_off_cpu_in_bfloat16_or_for_unknown_sizes():
    big = (1, 66, 66, 256), (3, 3, 256, 256)
    with device.kernels(cpu=False, isa="avx2"):
        assert split_conv.cuts(*big, tf.float32) == (split_conv.WHOLE, split_conv.WHOLE)
    with device.kernels(cpu=True, isa="avx2"):
        assert split_conv.cuts(*big, tf.bfloat16) == (split_conv.WHOLE, split_conv.WHOLE)
        assert split_conv.cuts((1, None, None, 256), big[1], tf.float32) == (split_conv.WHOLE, split_conv.WHOLE)
    with device.kernels(cpu=True, isa="other"):
        assert split_conv.cuts(*big, tf.float32) == (split_conv.WHOLE, split_conv.WHOLE)


def test_bands_cover_every_row_once():
    for rows, parts in [(64, 8), (62, 8), (5, 8), (1, 4)]:
        bands = split_conv._bands(rows, parts)
        assert [a for a, _ in bands] == list(np.cumsum([0] + [n for _, n in bands[:-1]]))
        assert sum(n for _, n in bands) == rows and all(n > 0 for _, n in bands)


def test_the_layer_cuts_only_stride_one_valid_convs():
    x = tf.random.stateless_normal((1, 10, 10, 256), seed=(1, 2))    # batch 1: cut in two on AVX-512
    for kwargs, cut in [({}, True), ({"strides": 2}, False), ({"padding": "same"}, False)]:
        layer = BiasAddConv2D(256, 3, **kwargs)
        layer.build(x.shape)
        with device.kernels(cpu=True, isa="avx512"):
            graph = tf.function(lambda t: layer(t)).get_concrete_function(tf.TensorSpec(x.shape)).graph
        n_convs = sum(op.type == "Conv2D" for op in graph.get_operations())
        assert n_convs == (2 if cut else 1), kwargs


@pytest.mark.parametrize("batch", [1, 2])
def test_instance_norm_pixels_as_batch_matches(batch):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, size=(batch, 9, 7, 5)).astype("float32"))
    dy = tf.constant(rng.normal(size=x.shape).astype("float32"))
    layer = networks.InstanceNormalization()
    layer.build(x.shape)
    layer.gamma.assign(rng.normal(1, 0.3, 5).astype("float32"))
    layer.beta.assign(rng.normal(0, 0.3, 5).astype("float32"))
    out = {}
    for isa in ("avx512", "avx2"):
        with device.kernels(cpu=True, isa=isa):
            assert networks.pixels_as_batch() == (isa == "avx2")
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            out[isa] = [y, *tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=dy)]
    for a, b in zip(out["avx2"], out["avx512"]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, rtol=1e-5)
    mean = tf.reduce_mean(out["avx2"][0], axis=[1, 2])
    np.testing.assert_allclose(mean.numpy(), np.broadcast_to(layer.beta.numpy(), mean.shape), atol=1e-5)


def test_vector_isa_follows_the_flags_and_onednn_cap(tmp_path):
    avx512 = frozenset("fma avx2 avx512f avx512bw avx512vl avx512dq".split())
    zen3 = frozenset("fma avx2 sse4_1".split())
    assert device.detect_isa(avx512) == "avx512"
    assert device.detect_isa(avx512, "avx2") == "avx2"
    assert device.detect_isa(avx512, "AVX512_CORE_BF16") == "avx512"
    assert device.detect_isa(zen3) == "avx2"
    assert device.detect_isa(zen3, "SSE41") == "other"
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu fma avx2\n")
    assert device.cpu_flags(str(path)) == frozenset({"fpu", "fma", "avx2"})
    with pytest.raises(ValueError, match="isa must be one of"):
        with device.kernels(isa="avx1024"):
            pass
