"""Full-volume jobs: block grid, per-block FFN, reconciliation, backends (local/dask/slurm/pbs),
streaming."""
