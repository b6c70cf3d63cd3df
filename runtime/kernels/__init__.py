"""Numba integer kernels of the simulator (numpy and numba only)."""
