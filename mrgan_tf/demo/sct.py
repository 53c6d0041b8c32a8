"""The demo's synthetic-CT stage: full-range records, an MR-GAN run, SynthRAD-convention scores, a PNG.

The paper's records keep CT as a 40/80 HU window, so the demo's three Table I
runs cannot give a synthetic CT in real HU. The demo's records stage makes a second
records directory from the same demo data with CT over [-1024, 3000] HU at 16 bits
(``build_records``), its training stage trains MR-GAN on it (``train_command``,
configs/demo_sct.cfg) beside the Table I runs, and this stage scores its MR -> CT generator
as SynthRAD does (``evaluate``'s original-grid metrics: MAE in HU, PSNR, 3-D SSIM, MS-SSIM
inside the mask; two ``evaluate`` processes, started as soon as that training ends:
``start_scoring``), with a bone-window PNG of synthetic beside reference CT.
``bench/experiments/sct_demo.py`` runs the same setting in all three modes for docs/RESULTS.md.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mrgan_tf.demo.runs import Child, DemoError, cmd_text, say, shared_cores_env
from mrgan_tf.inference.tta import TTAConfig

CT_RANGE = (-1024.0, 3000.0)      # SynthRAD's clip
BONE_WINDOW = (400.0, 1800.0)     # center, width in HU: air, soft tissue and bone all visible
SCT_METRICS = ("sct_mae", "sct_psnr", "sct_ssim", "sct_ms_ssim", "sct_unc_spearman", "sct_unc_mae_top10",
               "sct_unc_mae_rest")
SCT_LABELS = {"sct_mae": "MAE (HU)", "sct_psnr": "PSNR (dB)", "sct_ssim": "SSIM (3-D)", "sct_ms_ssim": "MS-SSIM",
              "sct_unc_spearman": "spread~error (Spearman)", "sct_unc_mae_top10": "MAE, top-10 % spread (HU)",
              "sct_unc_mae_rest": "MAE, other 90 % (HU)"}
TTA = ("flip",)     # the demo's test-time augmentation: its spread is the uncertainty map
DOSE_GRID_MM = 5.0  # the dose check's grid: ~20 s a head on 2 cores (3 mm, the dose tool's default: ~1 min)
DOSE_SHOWN = (("photons_mae_target", "photons mae_target (%)"), ("photons_gamma_2_2", "photons gamma 2%/2mm (%)"),
              ("protons_mae_target", "protons mae_target (%)"), ("protons_gamma_2_2", "protons gamma 2%/2mm (%)"),
              ("protons_target_d98_diff", "protons target ΔD98 (Gy)"))


def bone_window(hu) -> np.ndarray:
    """HU -> 0-255 through the bone window."""
    from mrgan_tf.preprocess.intensity import window_ct
    return window_ct(hu, *BONE_WINDOW) * 255.0


def sct_figure(png: str, data_root: str, patients: Sequence[str], predictors: Mapping[str, object]) -> str:
    """Middle axial slice per patient: MR | SynCT of each model | reference CT, CTs in the bone window."""
    from mrgan_tf.evaluation import figures
    from mrgan_tf.inference.synthesis import synthesize_volume
    from mrgan_tf.io.readers import find_modality_file, read_volume
    from mrgan_tf.preprocess import axial_image, resample_like, to_canonical

    rows, titles = [], []
    for pid in patients:
        ct = to_canonical(read_volume(find_modality_file(Path(data_root) / pid, "ct")))
        mr = read_volume(find_modality_file(Path(data_root) / pid, "mr"))
        k = ct.shape[2] // 2
        mr_on_ct = resample_like(mr, ct, order=1, fill=float(mr.data.min()))
        lo, hi = np.percentile(mr_on_ct.data, (0.5, 99.5))
        row = {"MR": np.clip((axial_image(mr_on_ct, k) - lo) / max(hi - lo, 1e-6), 0, 1) * 255.0}
        for name, predictor in predictors.items():
            sct, _ = synthesize_volume(predictor, mr)
            row[f"SynCT {name}"] = bone_window(axial_image(resample_like(sct, ct, order=1, fill=-1024.0), k))
        row["CT (reference)"] = bone_window(axial_image(ct, k))
        rows.append(row)
        titles.append(f"{pid} z{k}")
    c, w = BONE_WINDOW
    columns = [n if n == "MR" else f"{n}\nL{c:g}/W{w:g} HU" for n in rows[0]]
    return figures.comparison_fig6(png, [dict(zip(columns, r.values())) for r in rows], columns, titles)


def uncertainty_figure(png: str, data_root: str, patients: Sequence[str], fused) -> str:
    """Middle axial slice per patient: SynCT | CT (bone window) | |SynCT - CT| | the spread, in HU."""
    from mrgan_tf.evaluation import figures
    from mrgan_tf.inference.synthesis import synthesize_with_spread
    from mrgan_tf.io.readers import find_modality_file, read_volume
    from mrgan_tf.preprocess import axial_image, resample_like, to_canonical

    rows, titles = [], []
    for pid in patients:
        ct = to_canonical(read_volume(find_modality_file(Path(data_root) / pid, "ct")))
        sct, spread, _ = synthesize_with_spread(fused, read_volume(find_modality_file(Path(data_root) / pid, "mr")))
        k = ct.shape[2] // 2
        syn = axial_image(resample_like(sct, ct, order=1, fill=-1024.0), k)
        ref = axial_image(ct, k)
        rows.append((bone_window(syn), bone_window(ref), np.abs(syn - ref),
                     axial_image(resample_like(spread, ct, order=1, fill=0.0), k)))
        titles.append(f"{pid} z{k}")
    c, w = BONE_WINDOW
    return figures.error_and_spread(png, rows, titles, "HU", (f"SynCT, {'+'.join(TTA)} TTA\nL{c:g}/W{w:g}",
                                                              f"CT\nL{c:g}/W{w:g}", "|SynCT - CT|",
                                                              "Spread (SD of the copies)"))


def sct_table(per_patient: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Markdown: a row per (patient, model) with the SynthRAD sCT metrics (and the spread's scores, for a
    model of several predictions)."""
    shown = [k for k in SCT_METRICS if any(k in r for rows in per_patient.values() for r in rows.values())]
    lines = ["| Patient | Model | " + " | ".join(SCT_LABELS[k] for k in shown) + " |",
             "|---|---|" + "---:|" * len(shown)]
    patients = sorted({p for rows in per_patient.values() for p in rows})
    for pid in patients:
        for name, rows in per_patient.items():
            r = rows.get(pid, {})
            cells = ["-" if k not in r else (f"{r[k]:.3f}" if "ssim" in k or "spearman" in k else f"{r[k]:.1f}")
                     for k in shown]
            lines.append(f"| {pid} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class SyntheticCTStage:
    """Records, training command, evaluation and figures of the demo's synthetic-CT model."""

    def __init__(self, demo):
        self.d = demo
        self.records = os.path.join(demo.out, "records_sct")
        self.run_dir = os.path.join(demo.out, "sct")
        self.eval = os.path.join(demo.out, "eval_sct")
        self.png = os.path.join(demo.out, "sct_bone_window.png")
        self.eval_tta = os.path.join(demo.out, "eval_sct_tta")
        self.uncertainty_png = os.path.join(demo.out, "sct_uncertainty.png")
        self.per_patient: dict = {}
        self.dose: dict = {}
        self._scoring: list[Child] = []     # the evaluations started ahead (start_scoring)

    def preprocess_config(self):
        import dataclasses
        return dataclasses.replace(self.d.preprocess_config(), ct_range=CT_RANGE, bits=16,
                                   register=self.d.o.register or self.d.o.sct_register)

    def train_command(self) -> list[str]:
        return [sys.executable, "-m", "mrgan_tf.train", f"--flagfile={self.d.o.sct_config}", "--mode=mrgan",
                f"--records={self.records}", f"--out={self.run_dir}", f"--steps={self.d.o.steps}",
                f"--seed={self.d.o.seed}", *self.d.o.train_flags]

    def records_command(self) -> str:
        d = self.d
        register = ["--register"] if self.preprocess_config().register and not d.o.register else []  # else d's has it
        return cmd_text([*d.records_command(), "--ct_range=-1024,3000", "--bits=16", *register]) \
            .replace(f"--out={d.records}", f"--out={self.records}")

    def build_records(self) -> tuple[str, list[str]]:
        """``<out>/records_sct`` (part of the demo's records stage)."""
        from mrgan_tf.records.make_records import make_records
        d, cfg, cmd = self.d, self.preprocess_config(), self.records_command()
        if d._reuse("records_sct", cfg.to_dict(), os.path.isfile(os.path.join(self.records, "dataset.json"))):
            say(f"reusing {self.records}")
            return "reused", [cmd]
        say(cmd)
        make_records(d.data, self.records, cfg, manifest=os.path.join(d.data, "demo_manifest.csv"), overwrite=True,
                     workers=d.o.workers, progress=False)
        d.state.record("records_sct", cfg.to_dict())
        return "built", [cmd]

    def _export(self) -> str:
        return os.path.join(self.run_dir, "export")

    def scoring_commands(self) -> dict[str, list[str]]:
        """This stage's two evaluations: the plain scores with the dose check, and the same model with TTA."""
        d, export = self.d, self._export()
        base = [sys.executable, "-m", "mrgan_tf.evaluate", f"--dataset={self.records}"]
        dose = ["--dose", f"--dose_patients={d.o.dose_patients}", f"--resolution_mm={DOSE_GRID_MM:g}"]
        return {"eval_sct": [*base, f"--model=mrgan={export}", f"--out={self.eval}",
                             *(dose if d.o.dose_patients else [])],
                "eval_sct_tta": [*base, f"--model=mrgan_{'_'.join(TTA)}={export}", f"--tta={','.join(TTA)}",
                                 f"--out={self.eval_tta}"]}

    def _key(self) -> dict:
        from mrgan_tf.serving.export import resolve_version_dir
        return {"model": resolve_version_dir(self._export(), "mr2ct"), "tta": TTA,
                "dose": [self.d.o.dose_patients, DOSE_GRID_MM]}

    def _built(self) -> bool:
        """Whether every output of stage 7 is there."""
        return all(os.path.isfile(f) for f in (os.path.join(self.eval, "metrics.json"),
                                                os.path.join(self.eval_tta, "metrics.json"), self.png,
                                                self.uncertainty_png))

    def start_scoring(self, force: bool = False) -> None:
        """Starts ``scoring_commands`` as child processes as soon as the model is exported: they run beside
        the last trainings and the Table I evaluation, mostly on one core each (the dose check's plans are
        numpy), and ``__call__`` waits for them. Unless ``force`` (the model was just trained), nothing
        starts when the stage will be reused."""
        d = self.d
        if self._scoring or (not force and d.reusable("sct", self._key(), self._built())):
            return
        d.state.forget("sct")
        env = shared_cores_env(2)
        for name, cmd in self.scoring_commands().items():
            log = os.path.join(d.logs, f"{name}.log")
            say(f"[{name}] started beside the rest: {cmd_text(cmd, env)} (log: {log})")
            self._scoring.append(Child(name, cmd, log, env, echo=False))

    def finish_scoring(self) -> None:
        """Waits for ``start_scoring``'s children; a failure names its log."""
        children, self._scoring = self._scoring, []
        try:
            for child in children:
                if child.finish() != 0:
                    raise DemoError(f"{cmd_text(child.cmd)} failed (exit {child.proc.returncode}); full log: "
                                    f"{child.log_path}\n{child.tail()}")
        finally:
            self.stop_scoring(children)

    def stop_scoring(self, children: Sequence[Child] | None = None) -> None:
        """Ends the scoring children still running (the demo failed elsewhere)."""
        for child in (self._scoring if children is None else children):
            child.stop()

    def __call__(self) -> tuple[str, list[str]]:
        """Stage 7: scores (plain and with TTA) and the dose check (``start_scoring``), then the figures."""
        d = self.d
        commands = [cmd_text(cmd) for cmd in self.scoring_commands().values()]
        key = self._key()
        if d._reuse("sct", key, self._built()):   # false once scoring started (it forgets the stage)
            say(f"reusing {self.eval}")
            self._read_scores()
            return "reused", commands
        self.start_scoring(force=True)
        say("waiting for " + " and ".join(c.name for c in self._scoring))
        self.finish_scoring()
        self._read_scores()
        from mrgan_tf.inference.predictors import Fusion, load_predictor
        patients = sorted(next(iter(self.per_patient.values())))
        predictor = load_predictor(self._export(), "mr2ct")
        sct_figure(self.png, d.data, patients, {"MR-GAN": predictor})
        uncertainty_figure(self.uncertainty_png, d.data, patients, Fusion((predictor,), tta=TTAConfig(augment=TTA)))
        say(sct_table(self.per_patient))
        d.state.record("sct", key)
        return "built", commands

    def _read_scores(self) -> None:
        import json
        self.per_patient, self.dose = {}, {}
        for folder in (self.eval, self.eval_tta):
            with open(os.path.join(folder, "metrics.json")) as f:
                doc = json.load(f)
            self.per_patient.update(doc["synthrad"]["per_patient"])
            self.dose = self.dose or doc.get("dose", {})

    def dose_lines(self, rel) -> list[str]:
        """The dose check's rows (the demo's MR-GAN synthetic CT on its first test heads) and its pictures."""
        rows = self.dose.get("per_patient", {}).get("mrgan", {})
        if not rows:
            return []
        lines = ["### Dose check of the synthetic CT", "",
                 f"`evaluate --dose` on the first {len(rows)} test head(s), {DOSE_GRID_MM:g} mm grid: a photon and a "
                 "proton plan optimised on the CT, recomputed on the synthetic CT with the same beams and weights "
                 "(SynthRAD2025's figures; target: a sphere in the brain placed from the body, a comparison target, "
                 "not a clinical one). " + self.dose.get("caveat", ""), "",
                 "| Patient | " + " | ".join(label for _, label in DOSE_SHOWN) + " |",
                 "|---|" + "---:|" * len(DOSE_SHOWN)]
        for pid, r in sorted(rows.items()):
            lines.append(f"| {pid} | " + " | ".join("-" if r.get(k) is None else f"{r[k]:.2f}" for k, _ in DOSE_SHOWN)
                         + " |")
        lines.append("")
        for pid, folder in sorted(self.dose.get("folders", {}).get("mrgan", {}).items()):
            path = os.path.join(self.eval, folder)
            lines += [f"![{pid}: dose difference]({rel(os.path.join(path, 'dose_difference.png'))}) "
                      f"![{pid}: DVH]({rel(os.path.join(path, 'dvh.png'))})", ""]
        return lines

    def report_lines(self, rel) -> list[str]:
        """The report's synthetic-CT section (``rel`` makes paths relative to the demo folder)."""
        return ["## Synthetic CT in HU (MR -> CT, SynthRAD conventions)", "",
                f"MR-GAN trained on `{rel(self.records)}` (CT over {CT_RANGE[0]:g}..{CT_RANGE[1]:g} HU at 16 bits, "
                "instead of the 40/80 HU window the Table I runs use), scored on each test patient's own grid "
                "inside the mask: MAE in HU, PSNR on [-1024, 3000] HU (data range 4024), 3-D SSIM after +1024, "
                f"MS-SSIM (`{rel(os.path.join(self.eval, 'metrics.md'))}`). Demo scale: not SynthRAD results "
                "(published brain sCT MAEs are ~55-75 HU).", "",
                f"`mrgan_{'_'.join(TTA)}` is the same model with test-time augmentation ({', '.join(TTA)}): each "
                "copy is mapped back and the copies' median is the synthetic CT; their standard deviation, the "
                "spread, is the per-voxel uncertainty `synthesize --tta` writes beside every output. Its scores "
                "say whether it is worth looking at: the Spearman correlation of spread and |error| inside the "
                "mask, and the MAE where the spread is in its top 10 % against the rest "
                f"(`{rel(os.path.join(self.eval_tta, 'metrics.md'))}`).", "",
                sct_table(self.per_patient).rstrip(), "",
                f"![MR | SynCT | CT, bone window]({rel(self.png)})", "",
                f"![SynCT | CT | error | spread]({rel(self.uncertainty_png)})", "", *self.dose_lines(rel)]
