"""The provenance sidecar ``<output>.json``: which model, data and settings made an output.

A synthetic image leaves this tool for planning systems and archives; the
sidecar is what still says, months later, which model version (and how many
training iterations), which preprocessing, and which exact input (sha256)
produced it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tfrecords_tools.atomic import atomic_write_text

FORMAT = 1
TOOL = "mrgan-tf"
_CHUNK = 1 << 20


def tool_version() -> str:
    """The installed package's version (the source tree's setup.py version when not installed)."""
    from importlib import metadata

    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"


def sidecar_path(output) -> Path:
    """``out.nii.gz`` -> ``out.nii.gz.json``; a DICOM folder ``out/`` -> ``out.json`` beside it."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def sha256_of(path) -> str:
    """sha256 of a file; of a folder, of the sorted list of (relative name, file sha256) lines."""
    path = Path(path)
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        return h.hexdigest()
    lines = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            lines.append(f"{full.relative_to(path).as_posix()} {sha256_of(full)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _checkpoint_iteration(run_dir: str) -> int | None:
    """The model's iteration counter in a run's latest checkpoint (None when it has none)."""
    import tensorflow as tf

    ckpt = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if ckpt is None:
        return None
    reader = tf.train.load_checkpoint(ckpt)
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith("model/iteration/")]
    return int(reader.get_tensor(names[0])) if names else None


def model_record(source: str, name: str) -> dict[str, Any]:
    """Model path, version, training iterations and run config of one direction, from what export/train store."""
    from mrgan_tf.training.checkpoints import RUN_CONFIG, load_run_config

    source = os.path.abspath(source)
    if os.path.isfile(os.path.join(source, RUN_CONFIG)):
        import tensorflow as tf

        cfg = load_run_config(source)
        ckpt = tf.train.latest_checkpoint(os.path.join(source, "checkpoints"))
        return {"path": source, "kind": "run", "direction": name,
                "version": os.path.basename(ckpt) if ckpt else None,
                "training_iterations": _checkpoint_iteration(source), "run_config": cfg.get("model", {}),
                "records": cfg.get("records")}
    from mrgan_tf.serving.export import read_info

    info = read_info(source)
    version = os.path.basename(source)
    return {"path": source, "kind": "saved_model", "direction": info.get("name", name),
            "version": int(version) if version.isdigit() else version,
            # export stores the model config, not the iteration count
            "training_iterations": info.get("iterations", info.get("model", {}).get("iterations")),
            "run_config": info.get("model", {})}


def provenance(model: dict, input_path, output, direction: str, preprocess: dict, written: dict | None = None,
               extra: dict | None = None) -> dict[str, Any]:
    """The sidecar document (see ``write_sidecar``)."""
    return {
        "format": FORMAT,
        "tool": TOOL,
        "tool_version": tool_version(),
        "direction": direction,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": os.path.abspath(input_path), "sha256": sha256_of(input_path),
                  "sha256_of": "file" if Path(input_path).is_file() else "folder: sorted 'name sha256' lines"},
        "output": _output(output, written),
        "model": model,
        "preprocess": preprocess,
        **(extra or {}),
    }


def for_output(doc: dict, output, written: dict | None = None, **extra) -> dict:
    """``doc`` (a ``provenance`` document) for another output made by the same synthesis (the spread)."""
    return {**doc, "output": _output(output, written), **extra}


def _output(output, written: dict | None) -> dict:
    return {"path": os.path.abspath(output), **{k: v for k, v in (written or {}).items() if k != "path"}}


def write_sidecar(output, doc: dict) -> Path:
    """Write ``doc`` as ``<output>.json`` atomically; returns its path."""
    path = sidecar_path(output)
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    return path
