"""Figures in the style of the paper (Figs. 5-7), loss curves and TensorBoard panels.

Uses matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg)
and never ``pyplot``, so it needs no display and changes no global backend.
Every PNG is written under a temporary name in the target folder and renamed
into place, so a crash never leaves a half-written figure. Images for Figs. 5-7
are 2-D arrays on the paper's 0-255 scale (docs/DESIGN.md "Intensities").
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from tfrecords_tools.atomic import atomic_output

FIG5_COLUMNS = ("Input CT", "Synthesized MR", "Reference MR", "Absolute error")
FIG6_COLUMNS = ("Input CT", "Paired", "Unpaired", "MR-GAN", "Reference MR")
FIG7_COLUMNS = ("Input CT", "Synthesized MR", "Reconstructed CT", "Relative difference")
_PANEL_IN = 2.2  # inches per image panel


def save_png(fig: Figure, path, dpi: int = 100) -> str:
    """Render ``fig`` to ``path`` as PNG atomically (temp file in the same folder + rename)."""
    path = os.fspath(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _image(x, what: str) -> np.ndarray:
    """A 2-D float array; accepts (H, W) or (H, W, 1) and anything array-like (e.g. tensors)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D image (H, W), got shape {a.shape}")
    return a


def _grid(nrows: int, ncols: int, colorbar: bool, aspect: float = 1.0
          ) -> tuple[Figure, np.ndarray]:
    """Figure with an nrows x ncols grid of tick-less panels of height/width ``aspect``."""
    if nrows < 1:
        raise ValueError("no rows to draw")
    width = ncols * _PANEL_IN + (0.8 if colorbar else 0.0)
    height = nrows * _PANEL_IN * min(max(aspect, 0.25), 4.0) + 0.4
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _label(axes: np.ndarray, columns: Sequence[str], titles: Sequence[str] | None) -> None:
    """Column headers on the first row; optional row labels on the first column."""
    for ax, name in zip(axes[0], columns):
        ax.set_title(name, fontsize=9)
    if titles is not None:
        if len(titles) != axes.shape[0]:
            raise ValueError(f"{len(titles)} titles for {axes.shape[0]} rows")
        for ax, t in zip(axes[:, 0], titles):
            ax.set_ylabel(str(t), fontsize=8)


def _grey(ax, img: np.ndarray) -> None:
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=255.0, interpolation="nearest")


def _with_error_map(path, rows, columns, titles, error_fn, cbar_label, vmax, cmap, dpi) -> str:
    """Shared layout of Figs. 5 and 7: three grey images and one colour-mapped error map."""
    if not rows:
        raise ValueError("no rows to draw")
    for i, r in enumerate(rows):
        if len(r) != 3:
            raise ValueError(f"row {i}: expected 3 images, got {len(r)}")
    rows = [tuple(_image(x, f"row {i} {columns[j]}") for j, x in enumerate(r))
            for i, r in enumerate(rows)]
    for i, r in enumerate(rows):
        if len({a.shape for a in r}) != 1:
            raise ValueError(f"row {i}: image shapes differ: {[a.shape for a in r]}")
    errors = [error_fn(*r) for r in rows]
    if vmax is None:
        vmax = max(float(max(e.max() for e in errors)), 1e-12)
    h, w = rows[0][0].shape
    fig, axes = _grid(len(rows), 4, colorbar=True, aspect=h / w)
    im = None
    for ax_row, r, err in zip(axes, rows, errors):
        for ax, img in zip(ax_row[:3], r):
            _grey(ax, img)
        im = ax_row[3].imshow(err, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    _label(axes, columns, titles)
    fig.colorbar(im, ax=axes[:, 3].tolist(), shrink=0.9, label=cbar_label)
    return save_png(fig, path, dpi)


def montage_fig5(path, rows: Sequence[tuple], titles: Sequence[str] | None = None,
                 error_max: float | None = None, cmap: str = "jet", dpi: int = 100) -> str:
    """Fig. 5: Input CT | Synthesized MR | Reference MR | |SynMR - MR| with a colour bar.

    ``rows`` are ``(ct, syn_mr, ref_mr)`` on 0-255; ``titles`` label the rows.
    The error scale is shared by all rows: 0 to ``error_max`` (default: largest error).
    """
    return _with_error_map(path, rows, FIG5_COLUMNS, titles, lambda ct, syn, ref: np.abs(syn - ref),
                           "|error| (0-255 scale)", error_max, cmap, dpi)


def cycle_fig7(path, rows: Sequence[tuple], titles: Sequence[str] | None = None,
               error_max: float | None = None, cmap: str = "jet", dpi: int = 100) -> str:
    """Fig. 7: Input CT | SynMR | reconstructed CT | |rec - CT| / (CT range) with a colour bar.

    ``rows`` are ``(ct, syn_mr, rec_ct)`` on 0-255. The CT range is the input
    slice's max - min (1 when the slice is constant, to avoid dividing by 0).
    """
    def relative(ct, syn, rec):
        rng = float(ct.max() - ct.min())
        return np.abs(rec - ct) / (rng if rng > 0 else 1.0)

    return _with_error_map(path, rows, FIG7_COLUMNS, titles, relative,
                           "|rec - CT| / CT range", error_max, cmap, dpi)


def comparison_fig6(path, rows: Sequence[Mapping[str, np.ndarray]],
                    columns: Sequence[str] | None = None, titles: Sequence[str] | None = None,
                    dpi: int = 100) -> str:
    """Fig. 6: one column per label (default ``FIG6_COLUMNS`` order, else the first row's keys).

    A label missing from a row leaves an empty panel marked "n/a".
    """
    if not rows:
        raise ValueError("no rows to draw")
    if columns is None:
        columns = [c for c in FIG6_COLUMNS if c in rows[0]] or list(rows[0])
        columns += [k for k in rows[0] if k not in columns]
    shapes = [np.shape(v)[:2] for r in rows for v in r.values() if v is not None]
    if not shapes:
        raise ValueError("comparison_fig6: no images given")
    aspect = shapes[0][0] / max(shapes[0][1], 1)
    fig, axes = _grid(len(rows), len(columns), colorbar=False, aspect=aspect)
    for i, (ax_row, row) in enumerate(zip(axes, rows)):
        for ax, name in zip(ax_row, columns):
            if row.get(name) is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
                ax.set_box_aspect(aspect)  # same box as its neighbours
                continue
            _grey(ax, _image(row[name], f"row {i} {name}"))
    _label(axes, columns, titles)
    return save_png(fig, path, dpi)


def error_and_spread(path, rows: Sequence[tuple], titles: Sequence[str] | None = None, units: str = "HU",
                     columns: Sequence[str] = ("Synthetic", "Reference", "|Error|", "Spread (SD)"),
                     dpi: int = 100) -> str:
    """Where the prediction is wrong beside where it is unsure: per row a synthetic and a reference
    image (0-255), the absolute error and the spread (both in ``units``), each map with its own
    colour bar (a spread is several times smaller than the error it should rank)."""
    rows = [tuple(_image(x, f"row {i} {columns[j]}") for j, x in enumerate(r)) for i, r in enumerate(rows)]
    if not rows or any(len(r) != 4 for r in rows):
        raise ValueError("error_and_spread: rows of (synthetic, reference, error, spread)")
    h, w = rows[0][0].shape
    fig, axes = _grid(len(rows), 4, colorbar=True, aspect=h / w)
    maps = {}
    for col in (2, 3):
        vmax = max(float(np.percentile(np.concatenate([r[col].ravel() for r in rows]), 99.5)), 1e-12)
        for ax, r in zip(axes[:, col], rows):
            maps[col] = ax.imshow(r[col], cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
    for ax_row, r in zip(axes, rows):
        for ax, img in zip(ax_row[:2], r[:2]):
            _grey(ax, img)
    _label(axes, columns, titles)
    for col, what in ((2, "|error|"), (3, "spread")):
        fig.colorbar(maps[col], ax=axes[:, col].tolist(), shrink=0.9, label=f"{what}, {units}")
    return save_png(fig, path, dpi)


def ema(values: Sequence[float], smooth: float) -> np.ndarray:
    """Exponential moving average (TensorBoard-style weight ``smooth`` in [0, 1))."""
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    acc = None
    for i, x in enumerate(v):
        if np.isfinite(x):
            acc = x if acc is None else smooth * acc + (1.0 - smooth) * x
        out[i] = np.nan if acc is None else acc
    return out


def _group(name: str) -> str:
    for sep in ("/", "_"):
        if sep in name:
            return name.split(sep, 1)[0]
    return name


def loss_curves(path, curves: Mapping[str, tuple], title: str | None = None,
                smooth: float = 0.0, max_per_axes: int = 4, dpi: int = 100) -> str:
    """Loss terms against step in one PNG; one subplot per name prefix when there are many.

    ``curves[name] = (steps, values)``. Names are grouped by their prefix before
    the first "/" (else "_") when there are more than ``max_per_axes`` curves.
    With ``smooth`` > 0 the raw curve is drawn faintly under its EMA.
    Non-finite values are left out of the lines.
    """
    if not curves:
        raise ValueError("no curves to draw")
    groups: dict[str, list[str]] = {}
    for name in curves:
        key = _group(name) if len(curves) > max_per_axes else ""
        groups.setdefault(key, []).append(name)
    n = len(groups)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (key, names) in zip(axes, groups.items()):
        for name in names:
            steps, values = (np.asarray(a, dtype=np.float64) for a in curves[name])
            if steps.shape != values.shape or steps.ndim != 1:
                raise ValueError(f"curve {name!r}: steps {steps.shape} and values {values.shape} "
                                 "must be 1-D of one length")
            values = np.where(np.isfinite(values), values, np.nan)
            if smooth > 0:
                line, = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
                ax.plot(steps, ema(values, smooth), color=line.get_color(), label=name)
            else:
                ax.plot(steps, values, label=name)
        if key:
            ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_png(fig, path, dpi)


def slice_panel(ct, syn_mr, ref_mr, rec_ct, value_range: tuple[float, float] = (-1.0, 1.0)
                ) -> np.ndarray:
    """uint8 [H, 5W] strip CT | SynMR | reference MR | |SynMR - MR| | SynCT(SynMR(CT)).

    Plain numpy for TensorBoard image summaries. Inputs are (H, W) or (H, W, 1)
    in ``value_range`` ((-1, 1) network scale, or (0, 1)). ``ref_mr=None``
    (unpaired data) leaves the reference and error panels black.
    """
    lo, hi = map(float, value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")

    def unit(x, what):
        return np.clip((_image(x, what) - lo) / (hi - lo), 0.0, 1.0)

    ct01, syn01, rec01 = unit(ct, "ct"), unit(syn_mr, "syn_mr"), unit(rec_ct, "rec_ct")
    ref01 = np.zeros_like(ct01) if ref_mr is None else unit(ref_mr, "ref_mr")
    shapes = [a.shape for a in (ct01, syn01, ref01, rec01)]
    if len(set(shapes)) != 1:
        raise ValueError(f"slice_panel: image shapes differ (ct, syn, ref, rec): {shapes}")
    err01 = np.zeros_like(ct01) if ref_mr is None else np.abs(syn01 - ref01)
    strip = np.concatenate([ct01, syn01, ref01, err01, rec01], axis=1)
    return np.round(strip * 255.0).astype(np.uint8)
