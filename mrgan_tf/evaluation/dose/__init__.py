"""Dose check of a synthetic CT, as SynthRAD2025 scores one: plan on the reference CT, recompute on the synthetic.

One module per job: ``config`` (the plan's numbers and their flags), ``inputs`` (the two CTs on one
planning grid, with what was filled or clipped counted), ``structures`` (body, target, organs at risk;
masks, RTSTRUCT, the synthetic comparison target), ``engine`` (pyRadPlan: photon and proton plans, the
recompute with the same weights), ``metrics`` (mae_target, gamma, DVH points), ``figures``,
``report`` (JSON and Markdown), ``check`` (``dose_check``: the library entry point) and ``cli``.
"""
