"""Side by side with the original PyTorch YOLACT: same weights, same inputs, outputs and speed.
``scripts/compare_pytorch.py`` is the command line over this package.

The original is imported at run time from the user's checkout of dbolya/yolact (``yolact.Yolact``,
``data.config.set_cfg`` / ``cfg``, ``layers.output_utils.postprocess``); nothing of it is copied
into this project, and the checkout is not modified.

Modules: ``import_stubs`` (the import hook standing in for missing packages), ``shims`` (the
runtime shims the original needs on a modern or CPU-only stack), ``dcn_torch`` (a pure-PyTorch
DCNv2 for the original's YOLACT++ backbones), ``original`` (importing the
original, recording its head outputs, its results as numpy), ``weights``, ``inputs``,
``outputs`` (comparing raw outputs and detections), ``timing``, ``inference`` (both sides'
inference, compared and timed), ``train`` (one training step side by side), ``report``
(markdown) and ``session`` (a whole run).

What is compared
----------------
* Weights: a checkpoint is loaded into the original with its own ``load_weights`` and into ours
  through :mod:`yolact_jax.checkpoint.convert`. Random weights: our Flax variables from a seed
  (BatchNorm affine parameters perturbed and running statistics calibrated on the first batch, so
  they are far from 0/1), converted with ``variables_to_state_dict`` and loaded into the original
  with ``load_state_dict(strict)``.
* Inputs: image files or seeded smooth random images of COCO-like sizes. Both sides get the SAME
  network input tensor: our eval preprocessing (:func:`yolact_jax.predict.preprocess`, the
  original's ``FastBaseTransform`` semantics) is run once per batch and fed to both (the
  original's ``FastBaseTransform`` needs CUDA).
* Raw head outputs (``loc``, ``conf`` as softmax probabilities, ``mask`` coefficients, ``proto``,
  ``priors``): max and mean absolute difference. The original's are recorded where its forward
  hands them to ``Detect``.
* Detections after each side's Detect and postprocess (score threshold 0): matched per image by
  class and box IoU (greedy in our score order), with the score (and YOLACT++ mask score)
  difference and the mask IoU of every matched pair at full image resolution. Both sides'
  Detect settings are recorded. The original's standard NMS is its Cython NMS, compiled
  through ``pyximport`` (needs Cython).
* Speed, timed the same way on both sides: batches from the network input (already in memory /
  on the device) to per-image numpy results on the host (network, Detect, postprocess; the
  original's ``eval.py --benchmark`` scope), untimed warm-up batches then the median (p10, p90)
  of the timed ones; CUDA is synchronised / JAX outputs are fetched inside the timer.
  ``network`` times the network alone (the original's forward with Detect bypassed, ours as its
  own jitted program). Our compile time is reported apart. The four timed loops (each side's
  ``network`` and ``end_to_end``) are interleaved round-robin, the order rotating every repeat,
  so a shared machine's changing load falls on both sides alike.
* Training step: a batch of the images at the network input size with seeded objects (ellipses
  and rectangles with their tight boxes). From the same weights, one step on each side (see
  :mod:`yolact_jax.compare.train`), both at the learning rate of iteration 0. Reported: every
  loss term on both sides, and the parameter update (new - old) of ours against the original's.
  For scale, the original is also run against itself with its input perturbed by 1e-6
  (relative): its hard-negative mining makes the update sensitive to float32 rounding, so that
  is the floor for "the same". Then untimed and timed steps per side, interleaved (ours compiled
  beforehand, compile time reported apart), each from the initial weights and optimiser state
  (restored untimed: repeated steps from random weights can diverge, and a step's cost does not
  depend on the weights).

YOLACT++
--------
The ++ presets (``yolact_plus_base``, ``yolact_plus_resnet50``) compare like the others, with:

* DCN: the original's ResNet bottlenecks build ``dcn_v2.DCN``, the compiled extension in its
  ``external/DCNv2``, which only runs on CUDA. When it cannot be imported, or CUDA is
  unavailable, the import hook serves a ``dcn_v2`` package whose ``DCN`` is
  :class:`yolact_jax.compare.dcn_torch.DCN`: a modulated deformable convolution in torch's own
  ops with the CUDA kernel's semantics (offsets (dy, dx) interleaved per tap, sigmoid modulation
  from the last third of ``conv_offset_mask``'s channels, bilinear neighbours outside the image
  read 0, a tap outside (-1, H) x (-1, W) is 0, plus the bias), the extension's constructor and
  parameter names, so the original's state_dict loads unchanged. The report's ``shims`` record
  ``dcn_v2_torch``. Random weights give every DCN random offset/modulation weights (their
  initial zeros would make each DCN half a plain conv and leave the sampling untested).
* Mask re-scoring: the original's postprocess returns the scores as the pair [box scores, mask
  scores] (mask scores = class score x the mask-IoU network's prediction); both are compared
  per matched detection (ours: ``Detections.mask_scores`` where present).
* Priors (9 per location), the mask-IoU network's weights and the ``I`` loss term of the
  training step need nothing special; the settings record the preset's ++ features.

Same threads, same device
-------------------------
The whole process is pinned to N CPUs (``os.sched_setaffinity``, before JAX starts its thread
pool; XLA's CPU client sizes its pool from the affinity, and its thread flags are ignored by the
current CPU runtime) and ``torch.set_num_threads(N)`` is called. On ``cpu`` JAX runs with
``jax_platforms=cpu`` and the original on the CPU; on ``cuda`` both run on the GPU (the original
as its eval.py does: ``.cuda()`` and CUDA default tensors).

Measure on an otherwise idle machine. When other work keeps the CPUs busy, multi-threaded
PyTorch suffers far more than XLA: its OpenMP threads spin-wait at every operator's barrier for
descheduled siblings (measured here: the original 3.3x slower at 2 threads on 2 busy cores than
at 1). The report records the load average before and after timing, the thread-related
environment (``OMP_WAIT_POLICY`` ...) and warns when the load exceeded the machine's CPUs; then
compare with one thread or ``OMP_WAIT_POLICY=PASSIVE`` too.
"""
