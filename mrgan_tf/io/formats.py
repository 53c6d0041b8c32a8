"""File formats by name: the suffixes each reader and writer takes, and a path's suffix.

Below both ``io.readers`` and ``io.writers``, so that neither imports the other.
"""
from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm",)   # one enhanced (multi-frame) image; a classic series is a folder
INVESALIUS_SUFFIXES = (".inv3",)
# Order of preference only matters for error messages: two hits is an error.
MODALITY_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd", ".mhd", ".inv3", ".dcm")


def suffix(path: Path) -> str:
    """The format suffix of ``path``, lower case; two-part suffixes (``.nii.gz``) whole."""
    name = Path(path).name.lower()
    for known in NIFTI_SUFFIXES + SITK_SUFFIXES + DICOM_SUFFIXES + INVESALIUS_SUFFIXES:
        if name.endswith(known):
            return known
    return Path(name).suffix
