"""Bipolar self-attention (BSA) with Shiftmax: reference (naive.py) and fused operator (op.py)."""
