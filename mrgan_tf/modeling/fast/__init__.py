"""Speed kernels behind contracts: they change how an update runs, never what it computes."""
