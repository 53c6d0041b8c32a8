"""The one-command demo: data, training runs, synthetic-CT stage, report."""
