"""yolact-jax: YOLACT instance segmentation in JAX/Flax, numerically matching the original."""

__version__ = '0.1.0'
