"""Tests for mrgan_tf.evaluation.figures: valid PNGs, atomic writes, the TensorBoard panel."""
import os

import numpy as np
import pytest
from PIL import Image

from mrgan_tf.evaluation import figures as F


def _img(seed, size=48):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2) * 180.0
    return np.clip(disc + rng.normal(0, 10, (size, size)), 0, 255)


def _check_png(path, min_px=100):
    assert os.path.isfile(path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        w, h = im.size
    assert w > min_px and h > min_px
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
    assert leftovers == []
    return w, h


def test_montage_fig5(tmp_path):
    rows = [(_img(0), _img(1), _img(2)), (_img(3), _img(4), _img(5))]
    out = F.montage_fig5(tmp_path / "fig5.png", rows, titles=["p01 s10", "p02 s20"])
    assert out == str(tmp_path / "fig5.png")
    w, h = _check_png(out)
    assert w > h  # four columns, two rows
    # (H, W, 1) channels are accepted
    out1 = F.montage_fig5(tmp_path / "sub" / "one.png", [tuple(a[..., None] for a in rows[0])])
    _check_png(out1)


def test_cycle_fig7_and_constant_ct(tmp_path):
    ct = np.zeros((32, 32))  # constant slice: range 0 must not divide by zero
    out = F.cycle_fig7(tmp_path / "fig7.png", [(ct, _img(1, 32), _img(2, 32)),
                                              (_img(3, 32), _img(4, 32), _img(5, 32))])
    _check_png(out)


def test_comparison_fig6_order_and_missing(tmp_path):
    row = {"Reference MR": _img(4), "Input CT": _img(0), "Paired": _img(1),
           "Unpaired": _img(2), "MR-GAN": _img(3)}
    out = F.comparison_fig6(tmp_path / "fig6.png", [row, {k: v for k, v in row.items()
                                                           if k != "Unpaired"}])
    w, h = _check_png(out)
    assert w > 2 * h  # five columns, two rows
    out2 = F.comparison_fig6(tmp_path / "custom.png", [{"a": _img(0), "b": _img(1)}],
                             columns=["b", "a"])
    _check_png(out2)


def test_loss_curves_grouped_and_smoothed(tmp_path):
    steps = np.arange(50)
    curves = {f"{g}/{t}": (steps, np.exp(-steps / 20) + 0.1 * np.sin(steps + i))
              for i, (g, t) in enumerate([("gen", "adv"), ("gen", "cycle"), ("gen", "voxel"),
                                          ("disc", "mr"), ("disc", "ct")])}
    curves["gen/adv"][1][3] = np.nan
    out = F.loss_curves(tmp_path / "loss.png", curves, title="losses", smooth=0.6)
    w, h = _check_png(out)
    assert w > h
    single = F.loss_curves(tmp_path / "one.png", {"total": (steps, steps * 0.5)})
    _check_png(single)


def test_ema():
    np.testing.assert_allclose(F.ema([1.0, 3.0, 3.0], 0.5), [1.0, 2.0, 2.5])
    np.testing.assert_allclose(F.ema([1.0, 3.0], 0.0), [1.0, 3.0])
    with pytest.raises(ValueError):
        F.ema([1.0], 1.0)


def test_slice_panel_shape_dtype_values():
    h, w = 8, 6
    ct = -np.ones((h, w))
    syn = np.ones((h, w, 1))
    ref = np.zeros((h, w))
    rec = np.full((h, w), 0.5)
    p = F.slice_panel(ct, syn, ref, rec)
    assert p.shape == (h, 5 * w) and p.dtype == np.uint8
    assert (p[:, :w] == 0).all() and (p[:, w:2 * w] == 255).all()
    assert (p[:, 2 * w:3 * w] == 128).all()         # 0 in [-1, 1] -> 0.5
    assert (p[:, 3 * w:4 * w] == 128).all()         # |1 - 0.5| = 0.5
    assert (p[:, 4 * w:] == 191).all()              # 0.75
    q = F.slice_panel(ref, ref + 1, None, ref, value_range=(0, 1))
    assert q.shape == (h, 5 * w) and (q[:, 2 * w:4 * w] == 0).all()
    with pytest.raises(ValueError, match="shapes differ"):
        F.slice_panel(ct, syn, np.zeros((h, w + 1)), rec)


def test_bad_rows_raise_and_leave_nothing(tmp_path):
    with pytest.raises(ValueError, match="3 images"):
        F.montage_fig5(tmp_path / "bad.png", [(_img(0), _img(1))])
    with pytest.raises(ValueError, match="2-D"):
        F.cycle_fig7(tmp_path / "bad.png", [(np.zeros((2, 3, 4)),) * 3])
    with pytest.raises(ValueError, match="no rows"):
        F.montage_fig5(tmp_path / "bad.png", [])
    assert os.listdir(tmp_path) == []


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(F.Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        F.montage_fig5(target, [(_img(0), _img(1), _img(2))])
    assert target.read_bytes() == b"old"       # old file untouched
    assert os.listdir(tmp_path) == ["fig.png"]  # no temp file left behind
