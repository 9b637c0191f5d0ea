"""Helpers for tests and benchmarks: throwaway Slurm and OpenSSH servers on loopback.

Nothing here is needed at run time; it lives in the package so that ``benchmarks/`` scripts and
other projects' tests can start the same services as ``tests/services.py`` without importing pytest.
"""
