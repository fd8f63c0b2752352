"""Spiking experts mixture (SEMM): reference (naive.py) and fused operator (op.py)."""
