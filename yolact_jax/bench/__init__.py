"""Measuring speed: the benchmark behind ``yolact-jax benchmark``, and the timing every other
speed figure (``evaluate --benchmark``, ``yolact-jax compare``) goes through.

``timing`` (how a program is compiled, timed and summarised), ``machine`` (what a record says
about the machine; peak FLOP/s), ``grid`` (the preset x batch x dtype cases), ``inputs``
(synthetic and given inputs), one module per section (``inference``, ``nms``, ``train``,
``flops``, ``convgrad``, ``convnet``, ``dcn``, ``exported``), ``report`` (markdown), ``run``
(the sections in order, the files written) and ``fps`` (``evaluate --benchmark``).

Weights are random (seeded): every program has fixed shapes, so its cost does not depend on the
values. The results record the machine and its load average at the start and the end; on a
shared machine timings are noisy, so compare runs by their load.
"""
