"""Triton kernels of spikeops, one module per operator (imported as spikeops.kernels.<op>)."""
