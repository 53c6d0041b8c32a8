"""Check every shard set in a directory, and optionally draw a contact sheet.

    python -m tfrecords_tools.inspect DIR [--png FILE] [--n 16] [--group_key patient_id]

Example:
    python -m tfrecords_tools.inspect runs/demo/records --group_key=patient_id --png=sheet.png

For each set: examples, distinct groups, shards, and a full CRC + parse check of
every record. Exits 1 and prints ``BAD: <file> record <index>: <error>`` for
the first bad record of a set. ``--png`` writes (atomically) a grid of ``--n``
examples spread over all sets, each example's Image fields side by side.
"""
from __future__ import annotations

import io
import math
import os
import sys
from typing import Any

import numpy as np
from absl import app, flags

from tfrecords_tools import console
from tfrecords_tools.atomic import atomic_write_bytes

_PNG = flags.DEFINE_string("png", None, "Write a contact sheet of --n examples to this PNG file.")
_N = flags.DEFINE_integer("n", 16, "Number of examples on the contact sheet (spread over all sets).", lower_bound=1)
_GROUP_KEY = flags.DEFINE_string("group_key", None, "Field whose distinct values are counted per set, e.g. patient_id.")

Sample = tuple[str, Any, dict[str, np.ndarray]]  # (set name, group value or index, {field: image})


def _pick(count: int, k: int) -> set[int]:
    """``k`` indices spread evenly over ``range(count)``."""
    if count <= 0 or k <= 0:
        return set()
    return {int(i) for i in np.linspace(0, count - 1, num=min(k, count)).round()}


def _display(img: np.ndarray, dtype: str) -> tuple[np.ndarray, dict[str, Any]]:
    """[H, W, C] image -> something imshow shows faithfully (gray, or RGB for 3/4 channels)."""
    scale = {"uint8": 255.0, "uint16": 65535.0}.get(dtype)
    x = img.astype(np.float32)
    if scale is not None and x.max() <= 1:  # 0/1 label maps would look all black at full scale
        scale = 1.0
    if scale is None:  # float32: stretch to its own range
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    else:
        x = x / scale
    if x.shape[2] in (3, 4):
        return np.clip(x, 0, 1), {}
    return x[:, :, 0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}


def render_contact_sheet(samples: list[Sample], dtypes: dict[str, dict[str, str]]) -> bytes:
    """PNG bytes of a grid: one block per example, its images side by side, titled set/group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_example = max(1, max((len(imgs) for _, _, imgs in samples), default=1))
    cols = max(1, math.ceil(math.sqrt(len(samples))))
    rows = max(1, math.ceil(len(samples) / cols))
    fig = Figure(figsize=(1.8 * cols * per_example, 2.2 * rows))
    FigureCanvasAgg(fig)
    for s, (set_name, group, images) in enumerate(samples):
        r, c = divmod(s, cols)
        for j, (field, img) in enumerate(images.items()):
            ax = fig.add_subplot(rows, cols * per_example, r * cols * per_example + c * per_example + j + 1)
            shown, kwargs = _display(img, dtypes[set_name][field])
            ax.imshow(shown, interpolation="nearest", **kwargs)
            ax.set_title(f"{set_name}: {group}\n{field}", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def inspect_dir(directory: str, group_key: str | None = None, png: str | None = None, n: int = 16) -> int:
    """Print a report for every shard set in ``directory``; return the exit code (0 ok, 1 bad)."""
    from tfrecords_tools import reader, schema   # TensorFlow: not needed for --help or a usage error
    if png is not None:
        png_dir = os.path.dirname(os.path.abspath(png))
        if not os.path.isdir(png_dir):
            print(f"error: {png}: directory {png_dir} does not exist", file=sys.stderr)
            return 1
    try:
        sets = reader.list_shard_sets(directory)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not sets:
        print(f"error: {directory}: no shard sets (no *.shards.json index)", file=sys.stderr)
        return 1

    status = 0
    samples: list[Sample] = []
    dtypes: dict[str, dict[str, str]] = {}
    for s, (name, info) in enumerate(sets.items()):
        fields = reader.fields_of(info)
        images = [f for f, spec in fields.items() if isinstance(spec, schema.Image)]
        dtypes[name] = {f: fields[f].dtype for f in images}
        key = group_key if group_key in fields else None
        wanted = _pick(info["count"], n // len(sets) + (s < n % len(sets))) if png and images else set()

        def keep(i: int, ex: dict[str, Any], name=name, key=key, images=images, wanted=wanted) -> None:
            if i in wanted:
                samples.append((name, ex[key] if key else f"#{i}", {f: ex[f] for f in images}))

        report = reader.verify(directory, name, group_key=key, on_example=keep)
        groups = f"{report.groups} groups ({key})" if key else "groups n/a"
        verdict = "OK" if report.ok else "BAD"
        print(f"{name}: {report.count} examples, {groups}, {report.shards} shards, {verdict}")
        if not report.ok:
            status = 1
            bad = report.bad or reader.BadRecord(name, report.count, f"expected {report.expected_count} records")
            print(f"BAD: {bad}")

    if png is not None:
        if not samples:
            print(f"error: {png}: no Image fields to draw in {directory}", file=sys.stderr)
            return 1
        try:
            atomic_write_bytes(png, render_contact_sheet(samples, dtypes))
        except OSError as e:
            print(f"error: {png}: cannot write ({e.strerror or e})", file=sys.stderr)
            return 1
        print(f"wrote {png} ({len(samples)} examples)")
    return status


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise app.UsageError("expected exactly one argument: the directory holding *.shards.json")
    return inspect_dir(argv[1], group_key=_GROUP_KEY.value, png=_PNG.value, n=_N.value)


def run() -> None:
    """Console entry point (``tfrecords-inspect``)."""
    console.quiet_tensorflow()
    console.run(main, "inspect", help_text=__doc__, own=[os.path.dirname(os.path.abspath(__file__))])


if __name__ == "__main__":
    run()
