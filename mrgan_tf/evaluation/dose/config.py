"""The plan's numbers (beams, grid, prescription, optimiser) in one dataclass; the flags derive from it.

Defaults fit a head in minutes on 2 cores: a 3 mm planning grid, 7 coplanar photon beams and
3 coplanar proton beams, 5 mm beamlets and spots, 100 optimiser iterations.
"""
from __future__ import annotations

import dataclasses

from mrgan_tf.cli import Flag

MODALITIES = ("photons", "protons")


@dataclasses.dataclass(frozen=True)
class DoseConfig:
    """How the reference plan is made; the synthetic CT gets the same beams and weights."""

    prescription_gy: float = 60.0                 # to the target (total over the fractions)
    fractions: int = 30
    resolution_mm: float = 3.0                    # planning CT and dose grid voxel size
    photon_angles: tuple[float, ...] = (0.0, 51.0, 103.0, 154.0, 206.0, 257.0, 309.0)
    proton_angles: tuple[float, ...] = (0.0, 90.0, 270.0)
    bixel_mm: float = 5.0                         # photon beamlet width and proton spot spacing
    iterations: int = 100                         # fluence optimiser (scipy L-BFGS-B) iterations
    modalities: tuple[str, ...] = MODALITIES
    target_radius_mm: float = 15.0                # the synthetic comparison target, when no target is given
    gamma_cutoff_percent: float = 10.0            # gamma's low-dose cutoff, % of the reference's maximum

    def __post_init__(self):
        from mrgan_tf.errors import UserError
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise UserError(f"--modalities: expected some of {', '.join(MODALITIES)}, got {','.join(self.modalities)}")
        for name in ("prescription_gy", "resolution_mm", "bixel_mm", "target_radius_mm"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.fractions < 1 or self.iterations < 1:
            raise UserError("--fractions and --iterations must be at least 1")
        for m in self.modalities:
            if not self.angles(m):
                raise UserError(f"--{m[:-1]}_angles: a {m[:-1]} plan needs at least one beam")

    def angles(self, modality: str) -> tuple[float, ...]:
        return self.photon_angles if modality == "photons" else self.proton_angles


FLAGS = {
    "prescription_gy": Flag("Prescribed dose to the target in Gy (total); mae_target is relative to it."),
    "fractions": Flag("Number of fractions of the plan."),
    "resolution_mm": Flag("Voxel size of the planning CT and the dose grid in mm (the reference is resampled)."),
    "photon_angles": Flag("Gantry angles of the coplanar photon beams, degrees."),
    "proton_angles": Flag("Gantry angles of the coplanar proton beams, degrees."),
    "bixel_mm": Flag("Photon beamlet width and proton spot spacing in mm."),
    "iterations": Flag("Iterations of the fluence optimisation on the reference CT."),
    "modalities": Flag("Plans to make: photons, protons or both."),
    "target_radius_mm": Flag("Radius of the synthetic comparison target (used when no --target is given)."),
    "gamma_cutoff_percent": Flag("Gamma's low-dose cutoff in % of the reference dose maximum."),
}
