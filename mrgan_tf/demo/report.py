"""The demo's report: report.md (commands, times, tables, figures, paths), loss-curve input, the synthesis PNG."""
from __future__ import annotations

import csv
import json
import os
import re

from mrgan_tf.demo.runs import MODES, TRAININGS, DemoError, say


def read_history(path: str) -> dict[str, tuple[list[int], list[float]]]:
    """``history.csv`` -> {loss name: (iterations, values)} (iterations_per_second left out)."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    names = [k for k in rows[0] if k not in ("iteration", "iterations_per_second")]
    steps = [int(r["iteration"]) for r in rows]
    return {n: (steps, [float(r[n]) if r[n] not in ("", None) else float("nan") for r in rows]) for n in names}


def write_synthesis_png(ct_path: str, syn_path: str, png: str, cfg, title: str, n_slices: int = 4) -> str:
    """A few axial slices, CT (the model's window) | SynMR, as DESIGN orients them."""
    import numpy as np
    from matplotlib.figure import Figure

    from mrgan_tf.io.readers import read_volume
    from mrgan_tf.preprocess import axial_image, to_canonical, window_ct

    ct, syn = to_canonical(read_volume(ct_path)), to_canonical(read_volume(syn_path))
    if ct.shape != syn.shape:
        raise DemoError(f"{syn_path}: shape {syn.shape} differs from the CT's {ct.shape}")
    body = np.flatnonzero((ct.data > cfg.body_threshold_hu).mean(axis=(0, 1)) > 0.05)
    lo, hi = (body[0], body[-1]) if body.size else (0, ct.shape[2] - 1)
    ks = np.unique(np.linspace(lo, hi, n_slices + 2)[1:-1].round().astype(int))
    sx, sy = ct.spacing[0], ct.spacing[1]
    fig = Figure(figsize=(5.0, 2.5 * len(ks) + 0.4), layout="constrained")
    axes = fig.subplots(len(ks), 2, squeeze=False)
    for row, k in zip(axes, ks):
        images = (window_ct(axial_image(ct, k), cfg.ct_window_center, cfg.ct_window_width),
                  axial_image(syn, k) / 255.0)
        for ax, img, name in zip(row, images, ("CT", "SynMR")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, aspect=sy / sx)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}, slice {k}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    from mrgan_tf.evaluation.figures import save_png
    return save_png(fig, png)


def _rel(path: str, out: str) -> str:
    return os.path.relpath(path, out)


def report_markdown(demo, stages) -> str:
    """report.md of a finished ``Demo`` run (``stages``: its ``Stages`` rows)."""
    o, out = demo.o, demo.out
    lines = ["# mrgan-tf demo report", "",
             f"Built by `python -m mrgan_tf.demo --out={out} --steps={o.steps} --size_scale={o.size_scale:g} "
             f"--seed={o.seed}`{' --register' if o.register else ''}"
             + (f" with train flags `{' '.join(o.train_flags)}`" if o.train_flags else "") + ".",
             "",
             "> **Demo scale: these numbers say nothing about the paper's claims.** The data are a few "
             "simulated heads (anatomy of two real MR templates, simulated CTs; see "
             f"`{_rel(os.path.join(demo.data, 'README.txt'), out)}`), the networks are narrow, "
             f"and each model trained for {o.steps} iterations instead of the paper's 300k. "
             "The comparison shows the pipeline works end to end, not which method is better.",
             "", "## What was run", "",
             f"- Preprocessing: {o.spacing_mm:g} mm voxels, {o.image_size} x {o.image_size} px slices "
             f"(field of view {o.spacing_mm * o.image_size:g} mm), CT window 40/80 HU, 8-bit records, MR-to-CT "
             f"registration {'on' if o.register else 'off (the demo MRs are misaligned by 1-3 mm / 1-3 deg on purpose; --register turns it on, at ~20 s CPU per paired patient)'}.",
             f"- Training: `{os.path.relpath(o.config)}` in "
             f"modes {', '.join(MODES)}, and the synthetic-CT model (`{os.path.relpath(o.sct_config)}`), "
             f"{o.steps} iterations each, seed {o.seed}, {o.jobs} at once.",
             "", "| Stage | This run | Time this run (s) | Time when built (s) |", "|---|---|---:|---:|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']:.1f} | "
              f"{'-' if r['built_seconds'] is None else format(r['built_seconds'], '.1f')} |" for r in stages.rows]
    total = sum(r["seconds"] for r in stages.rows)
    built = sum(r["built_seconds"] or 0.0 for r in stages.rows)
    lines += [f"| **total** | | **{total:.1f}** | **{built:.1f}** |", ""]
    train = {m: demo.state.seconds(f"train/{m}") for m in TRAININGS}
    if all(v is not None for v in train.values()):
        lines += ["Training wall time per run (includes graph tracing and the SavedModel export; runs that "
                  "trained at once shared the cores): "
                  + ", ".join(f"{m} {s:.0f} s" for m, s in train.items()) + ".", ""]
    lines += ["Equivalent commands:", "", "```sh"]
    lines += [c for r in stages.rows for c in r["commands"]]
    lines += ["```", "", "## Comparison on the paired test patients (Table I style)", "",
              f"From `{_rel(os.path.join(demo.eval, 'metrics.md'), out)}` "
              f"(also `metrics.csv`, `metrics.json`). Test patients: "
              f"{', '.join(_test_patients(demo.records))}.", ""]
    lines += [_demote_headings(demo.metrics_md).strip(), ""]
    lines += ["## Tissue contrast (MR-GAN SynMR vs reference MR)", "", getattr(demo, "contrast_md", "-"), ""]
    lines += ["## Figures", ""]
    eval_pngs = sorted(p for p in os.listdir(demo.eval) if p.endswith(".png"))
    lines += [f"- [{p}]({_rel(os.path.join(demo.eval, p), out)})" for p in eval_pngs]
    if "fig6.png" in eval_pngs:
        lines += ["", f"![Fig. 6 style comparison]({_rel(os.path.join(demo.eval, 'fig6.png'), out)})"]
    lines += ["", "Loss curves (from each run's `history.csv`):", ""]
    lines += [f"- {m}: [{_rel(p, out)}]({_rel(p, out)})" for m, p in demo.loss_pngs.items()]
    syn = demo.syn
    lines += ["", "## Synthesis from a whole CT volume", "",
              f"MR-GAN's ct2mr SavedModel applied to `{_rel(syn['ct'], out)}` "
              + ("(the real Cranium CT of Debian's invesalius-examples, a CT-only training patient, so it has no "
                 "reference MR)" if syn["real"] else "(a simulated CT: the real Cranium CT was not available)")
              + f": `{_rel(syn['out'], out)}` (same grid as the CT; 0-255 scale).", "",
              f"![CT | SynMR]({_rel(syn['png'], out)})", "",
              *demo.sct.report_lines(lambda p: _rel(p, out)),
              "## SavedModels (TF Serving layout)", "",
              "| Mode | ct2mr | mr2ct | iterations |", "|---|---|---|---:|"]
    for m in MODES:
        e = demo.exports.get(m, {})
        lines.append(f"| {m} | `{_rel(e['ct2mr'], out) if 'ct2mr' in e else '-'}` | "
                     f"`{_rel(e['mr2ct'], out) if 'mr2ct' in e else '-'}` | {demo.iterations.get(m, '?')} |")
    lines += ["", "The paired baseline trains only CT -> MR, so it has no mr2ct model.", "",
              "## Logs", "", f"- TensorBoard: `tensorboard --logdir {out}`",
              f"- Training console logs: `{_rel(demo.logs, out)}/train_<mode>.log`; checkpoints in "
              "`<mode>/checkpoints/`.", ""]
    return "\n".join(lines)


def _demote_headings(md: str) -> str:
    """Nest metrics.md's headings under the report's section."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", md, flags=re.M)


def _test_patients(records: str) -> list[str]:
    with open(os.path.join(records, "dataset.json")) as f:
        return list(json.load(f)["split"]["test"])




def stage_report(demo, stages) -> tuple[str, list]:
    """The demo's last stage: loss-curve PNGs, the tissue-contrast table, then report.md."""
    from mrgan_tf.demo import tissue_contrast
    from mrgan_tf.evaluation import figures
    from tfrecords_tools.writer import atomic_write_text
    os.makedirs(demo.figures, exist_ok=True)
    for mode in MODES:
        curves = read_history(os.path.join(demo.runs[mode], "history.csv"))
        if curves:
            demo.loss_pngs[mode] = figures.loss_curves(os.path.join(demo.figures, f"loss_{mode}.png"), curves,
                                                       title=f"{mode}: training losses", smooth=0.6)
    demo.contrast_md = tissue_contrast.demo_markdown(demo.data, os.path.join(demo.runs["mrgan"], "export"))
    say(demo.contrast_md)
    path = os.path.join(demo.out, "report.md")
    atomic_write_text(path, report_markdown(demo, stages))
    say(f"wrote {path}")
    return "built", []
