"""Evaluation: image metrics (paper and SynthRAD), the evaluate CLI, figures."""
