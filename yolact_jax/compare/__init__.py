"""Side by side with the original PyTorch YOLACT (``yolact-jax compare``): the same weights and
network inputs on both sides; raw outputs, detections, one training step and speed compared.

The original is imported at run time from the user's checkout of dbolya/yolact (``original``)
under runtime shims for a modern or CPU-only stack (``shims``, ``import_stubs``, ``dcn_torch``
for YOLACT++'s DCNv2); nothing of it is copied here and the checkout is not modified. Both sides
get the same weights (``weights``) and the same network input, our eval preprocessing run once
per batch (``inputs``); detections are matched by class and box IoU (``outputs``); both sides
are timed the same way through :mod:`yolact_jax.bench.timing`, their loops interleaved
(``inference``, ``train``). ``session`` runs a whole comparison, ``report`` writes its markdown.

Same threads on both sides: the process is pinned to N CPUs before JAX starts and torch gets N
threads, so no module here imports JAX or torch at load. Measure on an idle machine: under load
PyTorch's spinning OpenMP threads suffer far more than XLA (the report warns when it was loaded).
"""
