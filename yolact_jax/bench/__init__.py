"""Benchmarks of yolact-jax: inference stages, NMS variants, the train step, FLOPs and the
convolutions' gradients. ``scripts/benchmark.py`` is the command line over this package.

Modules: ``grid`` (the preset x batch x dtype cases), ``timing`` (compiling, timing, cost and
memory of one program), ``device`` (the machine and its peak FLOP/s), ``inputs`` (synthetic
batches and Detect inputs), one module per section (``inference``, ``nms``, ``train``, ``flops``,
``convgrad``, ``dcn``), ``report`` (markdown) and ``run`` (the sections in order, the files
written).

How things are timed (the same everywhere)
------------------------------------------
* Each stage is its own ``jax.jit`` program. It is lowered and compiled explicitly first, so the
  compile time (``lower_s`` + ``compile_s``) is reported apart from the run time and never enters
  it. No persistent compilation cache is enabled here, so compile times are cold.
* Then ``warmup`` untimed calls, then up to ``repeats`` timed calls (fewer if a stage has run
  for ``max_seconds`` already, but at least ``MIN_TIMED_RUNS``). Each timed call ends with
  ``jax.block_until_ready`` on its outputs, so the device work is inside the timer. Reported:
  median, p10, p90, mean, min (ms) and the number of runs.
* Weights are random (seeded). Every program has fixed shapes, so its cost does not depend on the
  values; Detect's input is the random network's own output (inference section) or realistic
  score maps (NMS section).

Sections
--------
``inference``  per (preset, batch, dtype): ``network`` (backbone, FPN, ProtoNet, head; eval
               mode), ``detect_<nms>`` for each NMS variant (softmax, decode, per-class top-k, NMS,
               global top-D), ``postprocess`` (mask assembly, crop, bilinear resize to the image
               size inside the canvas, pixel boxes), ``end_to_end`` (network input ->
               network + Detect + postprocess + bit-packed masks, outputs copied to the host: the
               scope of the original's ``eval.py --benchmark``, which excludes data loading and
               the input transform) and ``end_to_end_uint8`` (the same from uint8 images,
               including the on-device resize and normalisation). ``--inference_stages``
               limits the stages.
``nms``        Fast NMS vs cross-class Fast NMS vs standard (greedy) NMS on C classes x top K
               (80 x 200): the NMS rule alone on prepared ranked candidate lists
               (``nms_only``) and the whole Detect (``detect``). Inputs: the original's raw head
               outputs ``raw.npz`` from the reference folder when present, otherwise synthetic
               clustered boxes with peaked scores.
``train``      the jitted, donated train step (forward, loss, backward, SGD) on a synthetic
               batch: images/s, compile time and memory. Memory: on GPU the device's
               ``peak_bytes_in_use`` after the runs (a process-wide high-water mark); on every
               backend the compiled executable's ``memory_analysis()`` (argument + output + temp
               - alias bytes: what the program needs resident) and the process max RSS.
``convgrad``   (opt-in) forward, input-gradient and weight-gradient time of the network's
               typical convolutions, each alone, with XLA's convolution and with the network's
               (``yolact_jax.ops.conv``): where a train step's time goes.
``dcn``        (opt-in; YOLACT++ presets) the DCN layers' share of the network (forward, network
               batch) and of the train step (forward + backward, train batch), two ways: the
               whole program against the same preset with ``model.backbone.dcn_layers`` zeroed, and
               every distinct DCN layer timed alone at its real shape (found by tracing the
               network with a method interceptor) next to the plain 3x3 conv it replaces.
               Programs the inference / train sections already timed are reused.
``flops``      XLA's cost analysis (``compiled.cost_analysis()['flops']``) of each timed
               program, achieved FLOP/s = flops / median time, and the fraction of the device's
               peak. Convention: one multiply-add = 2 FLOPs (XLA counts it so; a 64x64 @ 64x64
               matmul reports 2 * 64**3). Peak: given, else a table of known GPUs (dense
               tensor-core bf16, non-tensor FP32), else for a CPU cores x clock x FLOPs/cycle
               (see :func:`yolact_jax.bench.device.cpu_peak_gflops`). A large matmul is also
               timed (``matmul_probe``) as a practical ceiling of this machine.

The results also record the machine (jax version, device kind, CPU model, cores, load average at
start and end, date). On a shared machine timings are noisy: compare runs by their load average.
"""
