"""Inference: predictors (local or remote), whole-volume synthesis, outputs, provenance."""
