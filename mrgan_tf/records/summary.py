"""summary.json: what make_records kept, skipped and lost, per patient and per shard set, and its text form."""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from mrgan_tf.io.layout import PatientTask, not_patients_line
from mrgan_tf.records.convert import PatientResult

SUMMARY_NAME = "summary.json"



def _patient_entry(task: PatientTask, result: PatientResult | None, error: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": task.role, "split": task.split,
                             "sources": {m: getattr(task, m) for m in ("ct", "mr", "mask") if getattr(task, m)}}
    if error is not None:
        entry.update(n_slices_kept=0, n_slices_skipped=0, error=error)
        if result is not None and result.problem_kinds:
            entry["problems"] = list(result.problem_kinds)
        return entry
    if result.warnings:
        entry["warnings"] = list(result.warnings)
    if result.problem_kinds:
        entry["problems"] = list(result.problem_kinds)
    if result.partial_mr_dropped:
        entry["partial_mr_pairs_dropped"] = result.partial_mr_dropped
    if result.ct_offset_hu:
        entry["ct_offset_hu_subtracted"] = result.ct_offset_hu
    entry.update(n_slices_kept=result.n_kept, n_slices_skipped=result.num_slices - result.n_kept,
                 mr_range=list(result.mr_range) if result.mr_range else None,
                 body_voxels=result.body_voxels, body_voxels_outside_canvas=result.body_voxels_outside,
                 body_lost_fraction=round(result.body_voxels_outside / result.body_voxels, 6)
                 if result.body_voxels else 0.0)
    if result.registration is not None:
        entry["registration_metric"] = result.registration["metric"]
        entry["registration"] = result.registration
    return entry



def _summary(out: Path, tasks, failed, unlisted, not_patients, patients, sets, stage, seconds,
             workers) -> dict[str, Any]:
    by_role: dict[str, int] = collections.Counter(f"{t.role}/{t.split}" for t in tasks if t.patient_id not in failed)
    skipped = collections.Counter()
    for t in tasks:
        skipped[t.set_name] += patients.get(t.patient_id, {}).get("n_slices_skipped", 0)
    total = sum(info["count"] for info in sets.values())
    errors, warnings = collections.Counter(), collections.Counter()
    for e in patients.values():
        (errors if "error" in e else warnings).update(set(e.get("problems", ())))   # patients per kind
    return {
        "out": str(out),
        "patients": dict(sorted(by_role.items())),
        "slices": {name: sets[name]["count"] for name in sets},
        "skipped_slices": {name: skipped[name] for name in sets},
        "failed_patients": dict(sorted(failed.items())),
        "body_outside_canvas": {pid: {"voxels": e["body_voxels_outside_canvas"],
                                      "fraction": e["body_lost_fraction"]}
                                for pid, e in sorted(patients.items()) if e.get("body_voxels_outside_canvas")},
        "not_in_manifest": unlisted,
        "not_patients": dict(not_patients),
        "plausibility": {"errors": dict(sorted(errors.items())), "warnings": dict(sorted(warnings.items())),
                         "partial_mr_pairs_dropped": {pid: e["partial_mr_pairs_dropped"]
                                                      for pid, e in sorted(patients.items())
                                                      if e.get("partial_mr_pairs_dropped")},
                         "ct_offset_hu_subtracted": {pid: e["ct_offset_hu_subtracted"]
                                                     for pid, e in sorted(patients.items())
                                                     if e.get("ct_offset_hu_subtracted")},
                         "patient_warnings": {pid: e["warnings"] for pid, e in sorted(patients.items())
                                              if e.get("warnings")}},
        "workers": workers,
        "seconds": round(seconds, 3),
        "slices_per_second": round(total / seconds, 2) if seconds > 0 else None,
        "stage_cpu_seconds": {k: round(stage[k], 3) for k in ("read", "prepare", "write")},
    }



def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary lines (printed by the CLI)."""
    lines = [f"records written to {summary['out']}",
             "patients: " + ", ".join(f"{k} {v}" for k, v in summary["patients"].items()),
             "slices:   " + ", ".join(f"{k} {v}" for k, v in summary["slices"].items()),
             "skipped:  " + ", ".join(f"{k} {v}" for k, v in summary["skipped_slices"].items())
             + " (below min_foreground, or an empty MR slice)"]
    for pid, lost in summary.get("body_outside_canvas", {}).items():
        lines.append(f"body outside the canvas: patient {pid}: {lost['fraction']:.3%} ({lost['voxels']} voxels)")
    for pid, warnings in summary.get("plausibility", {}).get("patient_warnings", {}).items():
        lines += [f"warning: {w}" for w in warnings]
    if summary["failed_patients"]:
        lines.append(f"failed patients ({len(summary['failed_patients'])}, skipped):")
        lines += [f"  {pid}: {err}" for pid, err in summary["failed_patients"].items()]
    if summary["not_in_manifest"]:
        lines.append(f"not in manifest (left out): {', '.join(summary['not_in_manifest'])}")
    if summary.get("not_patients"):
        lines.append(not_patients_line(summary["not_patients"]))
    st = summary["stage_cpu_seconds"]
    lines.append(f"time: {summary['seconds']:.1f} s, {summary['slices_per_second']} slices/s "
                 f"(CPU: read {st['read']:.1f} s, prepare {st['prepare']:.1f} s in "
                 f"{summary['workers']} worker(s); write {st['write']:.1f} s)")
    return "\n".join(lines)
