"""Where things are: patient folders of a dataset root, the manifest, the train/test/val split.

``<root>/<patient_id>/{ct,mr,mask}`` (files or DICOM folders, ``io.readers``) ->
``PatientFolder`` per patient (``discover_patients``) -> a role (paired, ct, mr)
and split (train, test, val) per patient (``plan_patients``: from the manifest, or
paired patients held out by a seeded hash). make_records writes the records of
the plan; synthesize and evaluate find their patients here too. A records
directory (``dataset.json``, ``*.shards.json``) inside the root is not a patient.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from absl import logging

from mrgan_tf.errors import UserError
from mrgan_tf.io import problems
from mrgan_tf.io.formats import MODALITY_SUFFIXES
from mrgan_tf.io.problems import Problem
from mrgan_tf.io.readers import find_modality_file
from mrgan_tf.io.volumes import VolumeError

SPEC_NAME = "dataset.json"          # a records directory's spec (mrgan_tf.records.spec)
SHARD_INDEX_SUFFIX = ".shards.json"  # a shard set's index (tfrecords_tools.writer.INDEX_SUFFIX; that module loads TF)
ROLES = ("paired", "ct", "mr")
SPLITS = ("train", "test", "val")
MANIFEST_COLUMNS = ("patient_id", "role", "split")
# Which modalities each role reads and which shard set a (role, split) goes to.
ROLE_MODALITIES = {"paired": ("ct", "mr"), "ct": ("ct",), "mr": ("mr",)}
SET_OF = {("paired", "train"): "paired_train", ("paired", "test"): "paired_test", ("paired", "val"): "paired_val",
          ("ct", "train"): "unpaired_ct", ("mr", "train"): "unpaired_mr"}
UNSUPPORTED_FILE = "unsupported_file"  # problem kind: an image file in a patient folder that no reader takes

# Image formats users bring that no reader of this project takes (named, never ignored).
UNSUPPORTED_SUFFIXES = {".img": "Analyze/NIfTI-pair image", ".hdr": "Analyze/NIfTI-pair header",
                        ".dcm": "loose DICOM file", ".ima": "loose DICOM file", ".nii.bz2": "bzip2 NIfTI",
                        ".mnc": "MINC", ".mgz": "FreeSurfer", ".mgh": "FreeSurfer", ".par": "Philips PAR/REC",
                        ".rec": "Philips PAR/REC", ".gipl": "GIPL", ".vtk": "VTK", ".tif": "TIFF",
                        ".tiff": "TIFF", ".npy": "NumPy array", ".npz": "NumPy archive", ".zip": "zip archive",
                        ".tar.gz": "tar archive", ".tgz": "tar archive", ".tar": "tar archive"}
_HINTS = {".img": "convert the pair to NIfTI (nibabel reads it: nib.save(nib.load('{stem}.hdr'), '{stem}.nii.gz'))",
          ".hdr": "convert the pair to NIfTI (nibabel reads it: nib.save(nib.load('{stem}.hdr'), '{stem}.nii.gz'))",
          ".dcm": "put a series' slices in a folder named ct/ or mr/",
          ".ima": "put a series' slices in a folder named ct/ or mr/"}



class LayoutError(UserError, ValueError):
    """A dataset root, manifest or split request that cannot be used; the message names the path or flag."""


@dataclasses.dataclass
class PatientTask:
    """One patient to convert: which files, which role and split."""

    patient_id: str
    role: str
    split: str
    ct: str | None
    mr: str | None
    mask: str | None
    warnings: tuple[str, ...] = ()   # accepted folder problems (e.g. a file no reader takes)

    @property
    def set_name(self) -> str:
        return SET_OF[(self.role, self.split)]


@dataclasses.dataclass
class PatientFolder:
    """What a patient folder holds (paths, or the error that made it unusable)."""

    folder: Path
    files: dict[str, Path | None]
    error: str | None = None
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass
class RootContents:
    """A dataset root as found: its patient folders, and what else it holds (not a patient, and why)."""

    patients: dict[str, PatientFolder]
    not_patients: dict[str, str]   # entry name -> why it is not a patient folder (listed, never silently dropped)


def not_patients_line(not_patients: dict[str, str]) -> str:
    """One line for the output: what of the root was left out as not a patient."""
    return ("not patients (left out): " + "; ".join(f"{n} ({why})" for n, why in not_patients.items()))


def scan_root(root: str | os.PathLike, accept: Sequence[str] = ()) -> RootContents:
    """Patient folders of ``root`` (sorted), and the entries that are not patients.

    Public datasets carry more than patients (SynthRAD's ``overview/`` of spreadsheets
    and PNGs, a README): a plain file, or a folder of files none of which is an image, is
    not a patient and is listed in ``not_patients``; hidden entries are ignored. A folder
    that is empty, or holds images but neither a CT nor an MR, is a patient with an error. An image file
    that no reader takes (``ct.img``, a loose ``.dcm``) makes the folder unusable unless
    ``accept`` holds ``unsupported_file`` (then a warning)."""
    root = Path(root)
    if not root.exists():
        raise LayoutError(f"{root}: --root does not exist")
    if not root.is_dir():
        raise LayoutError(f"{root}: --root is not a directory")
    not_patients = {}
    folders = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            not_patients[entry.name] = "a file, not a patient folder"
        elif holds_records(entry):   # written into the root by an earlier make_records
            not_patients[entry.name] = "a records directory"
        elif not holds_images(entry) and any(not p.name.startswith(".") for p in entry.iterdir()):
            not_patients[entry.name] = "a folder without images"   # (an empty folder is a patient lacking them)
        else:
            folders.append(entry)
    if not folders:
        what = "is empty" if not any(root.iterdir()) else "has no patient folders (<root>/<patient_id>/ct.nii.gz ...)"
        raise LayoutError(f"{root}: --root {what}")
    return RootContents({folder.name: _patient_folder(folder, accept) for folder in folders}, not_patients)


def discover_patients(root: str | os.PathLike, accept: Sequence[str] = ()) -> dict[str, PatientFolder]:
    """The patient folders of ``root`` (``scan_root`` without what is not a patient)."""
    return scan_root(root, accept).patients


def _patient_folder(folder: Path, accept: Sequence[str]) -> PatientFolder:
    try:
        files = {m: find_modality_file(folder, m) for m in ("ct", "mr", "mask")}
    except VolumeError as e:
        return PatientFolder(folder, {}, str(e))
    errors, warnings = problems.split(unsupported_inputs(folder), accept)
    if errors:
        return PatientFolder(folder, files, "; ".join(map(str, errors)))
    error = None
    if files["ct"] is None and files["mr"] is None:
        error = f"{folder}: patient folder has neither a CT nor an MR (expected ct.nii.gz and/or mr.nii.gz, " \
                ".nii/.mha/.nrrd, or ct/ mr/ DICOM folders)"
    return PatientFolder(folder, files, error, tuple(f"{w} (accepted: left out)" for w in warnings))


# What makes a folder a patient's: an image of any kind this project or a scanner writes.
IMAGE_SUFFIXES = frozenset(MODALITY_SUFFIXES) | {".nhdr", ".raw", ".img", ".hdr", ".ima", ".nii.bz2", ".mnc",
                                                 ".mgz", ".mgh", ".par", ".rec", ".gipl", ".vtk"}


def holds_images(folder: Path) -> bool:
    """Whether ``folder`` holds an image: a ct/mr/mask entry, a volume file, or a subfolder of DICOM files."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    for entry in entries:
        name = entry.name.lower()
        if name.split(".")[0] in ("ct", "mr", "mask") or (entry.is_file() and _suffix(name) in IMAGE_SUFFIXES):
            return True
    return any(_is_dicom_file(f) for sub in entries if sub.is_dir()
               for f in itertools.islice((f for f in sub.iterdir() if f.is_file()), 3))


def _is_dicom_file(path: Path) -> bool:
    """The DICOM preamble's 'DICM' at byte 128 (how a series of extensionless files is recognised)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_manifest(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``{patient_id: (role, split)}`` from a CSV with columns patient_id,role,split (extra columns ignored)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = rows and list(rows[0].keys())
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LayoutError(f"{path}: cannot read manifest ({e})") from None
    if not rows:
        raise LayoutError(f"{path}: manifest has no rows (expected columns {','.join(MANIFEST_COLUMNS)})")
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise LayoutError(f"{path}: manifest lacks column(s) {missing}; has {header}")
    out: dict[str, tuple[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        pid, role, split = ((row.get(c) or "").strip() for c in MANIFEST_COLUMNS)
        if not (pid or role or split):
            continue
        if not pid:
            raise LayoutError(f"{path}:{line}: empty patient_id")
        if role not in ROLES:
            raise LayoutError(f"{path}:{line}: patient {pid!r} has role {role!r}, expected one of {ROLES}")
        if split not in SPLITS:
            raise LayoutError(f"{path}:{line}: patient {pid!r} has split {split!r}, expected one of {SPLITS}")
        if pid in out:
            raise LayoutError(f"{path}:{line}: patient {pid!r} is listed twice")
        out[pid] = (role, split)
    return out


def _hash_order(ids: Iterable[str], seed: int) -> list[str]:
    """Ids in a seeded pseudo-random but reproducible order (independent of listing order)."""
    return sorted(ids, key=lambda pid: (hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest(), pid))


def choose_test_patients(paired: Sequence[str], test_patients: int | Sequence[str], seed: int = 0,
                         flag: str = "--test_patients", what: str = "test") -> list[str]:
    """The paired patients held out for testing (or, with ``flag``/``what``, validation):
    a count (seeded hash order) or explicit ids."""
    if isinstance(test_patients, (int, np.integer)):
        n = int(test_patients)
        if n < 0:
            raise LayoutError(f"{flag} must be >= 0, got {n}")
        if n > len(paired) and paired:
            raise LayoutError(f"{flag}={n} but only {len(paired)} paired patient(s) exist")
        return sorted(_hash_order(paired, seed)[:n])
    ids = list(dict.fromkeys(test_patients))
    not_paired = [pid for pid in ids if pid not in paired]
    if not_paired:
        raise LayoutError(f"{flag}: {not_paired} not paired patient(s) (unknown, or CT or MR missing; "
                               f"{what} patients need both); paired: {sorted(paired)}")
    return sorted(ids)


def choose_val_patients(candidates: Sequence[str], val_patients: int | Sequence[str], seed: int = 0,
                        test: Iterable[str] = ()) -> list[str]:
    """Paired patients held out for validation (model selection), disjoint from the test patients."""
    if not isinstance(val_patients, (int, np.integer)):
        overlap = sorted(set(val_patients) & set(test))
        if overlap:
            raise LayoutError(f"--val_patients: {overlap} are test patients; selecting a model on test "
                                   "patients is leakage (choose other patients)")
    return choose_test_patients(candidates, val_patients, seed + 1, flag="--val_patients", what="validation")


def plan_patients(root: str | os.PathLike, *, test_patients: int | Sequence[str] = 2, split_seed: int = 0,
                  manifest: str | os.PathLike | None = None, val_patients: int | Sequence[str] = 0,
                  accept: Sequence[str] = ()) -> tuple[list[PatientTask], dict[str, str], list[str], dict[str, str]]:
    """Decide role and split of every patient folder.

    Returns (tasks, failed {id: error} for folders unusable as found, unlisted ids
    left out because the manifest does not name them, {entry: why} of the root's
    entries that are not patients).
    """
    contents = scan_root(root, accept)
    found = contents.patients
    failed = {pid: f.error for pid, f in found.items() if f.error}
    usable = {pid: f for pid, f in found.items() if not f.error}

    def has(pid: str, modality: str) -> bool:
        return usable[pid].files.get(modality) is not None

    unlisted: list[str] = []
    if manifest is not None:
        listed = read_manifest(manifest)
        unknown = sorted(set(listed) - set(found))
        if unknown:
            raise LayoutError(f"{manifest}: unknown patient(s) {unknown}: no such folder in {root}")
        unlisted = sorted(set(found) - set(listed))
        roles = {}
        for pid, (role, split) in listed.items():
            if pid in failed:
                continue
            lacking = [m for m in ROLE_MODALITIES[role] if not has(pid, m)]
            if lacking:
                raise LayoutError(f"{manifest}: patient {pid!r} has role {role!r} but "
                                       f"{usable[pid].folder} has no {' or '.join(lacking).upper()}")
            if split in ("test", "val") and role != "paired":
                what = "test" if split == "test" else "validation"
                raise LayoutError(f"{manifest}: patient {pid!r} is a {what} patient with role {role!r}; "
                                       f"{what} patients must be paired")
            roles[pid] = (role, split)
        for pid in unlisted:
            failed.pop(pid, None)
    else:
        auto = {pid: "paired" if has(pid, "ct") and has(pid, "mr") else ("ct" if has(pid, "ct") else "mr")
                for pid in usable}
        paired = sorted(pid for pid, r in auto.items() if r == "paired")
        test = set(choose_test_patients(paired, test_patients, split_seed))
        val = set(choose_val_patients([p for p in paired if p not in test], val_patients, split_seed, test))
        roles = {pid: (role, "test" if pid in test else "val" if pid in val else "train")
                 for pid, role in auto.items()}
    tasks = []
    for pid in sorted(roles):
        role, split = roles[pid]
        files = usable[pid].files
        wanted = ROLE_MODALITIES[role] + ("mask",)
        paths = {m: (str(files[m]) if m in wanted and files.get(m) is not None else None) for m in ("ct", "mr", "mask")}
        tasks.append(PatientTask(pid, role, split, **paths, warnings=usable[pid].warnings))
    if not any(t.role == "paired" for t in tasks):
        logging.warning("no paired patients: paired_train and paired_test will be empty")
    elif not any(t.set_name == "paired_train" for t in tasks):
        logging.warning("every paired patient is a test patient: paired_train will be empty")
    return tasks, failed, unlisted, contents.not_patients


def holds_records(path: Path) -> bool:
    """A records directory (written by make_records), not a patient folder."""
    return (path / SPEC_NAME).exists() or any(p.name.endswith(SHARD_INDEX_SUFFIX) for p in path.iterdir())


def _suffix(name: str) -> str:
    lower = name.lower()
    for long in (".nii.bz2", ".tar.gz"):
        if lower.endswith(long):
            return long
    return Path(lower).suffix


def unsupported_inputs(folder: str | Path) -> list[Problem]:
    """Image files directly in a patient folder that no reader takes (``ct.img``, loose ``.dcm``)."""
    folder = Path(folder)
    problems = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        suffix = _suffix(path.name)
        if suffix in UNSUPPORTED_SUFFIXES:
            hint = _HINTS.get(suffix, "convert it to NIfTI (.nii.gz), .mha or .nrrd")
            hint = hint.format(stem=path.name[:-len(suffix)])
            problems.append(Problem(UNSUPPORTED_FILE, f"{path}: {UNSUPPORTED_SUFFIXES[suffix]} ({suffix}) is not a "
                                                      f"supported input; {hint}, or pass --accept={UNSUPPORTED_FILE} "
                                                      "to leave it out"))
    return problems
