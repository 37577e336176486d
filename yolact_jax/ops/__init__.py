"""Numerical operations the network computes with, below the Flax modules.

``conv.py``: the network's convolution (``conv_general_dilated``), which picks per platform;
``cpu_conv.py``: the CPU rewrites it picks from (convolutions as matrix products).
"""
