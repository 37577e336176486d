"""Inference side by side: each side's network and end-to-end run on the same network inputs,
their raw outputs and detections compared, and both timed the same way."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from yolact_jax.bench.timing import speed_summary, time_interleaved
from yolact_jax.compare.inputs import Batch
from yolact_jax.compare.original import (NMS_TO_ORIGINAL_FLAGS, check_original_nms,
                                         install_output_capture, nchw_tensor, original_result,
                                         tensor_to_numpy)
from yolact_jax.compare.outputs import (compare_detections, merge_raw_diffs, merge_yardstick,
                                        ours_result, raw_output_diff,
                                        summarize_detection_comparison, yardstick_diff)
from yolact_jax.compare.weights import to_torch_state_dict

DETECT_SETTINGS = ('top_k', 'conf_thresh', 'nms_thresh', 'use_fast_nms', 'use_cross_class_nms')


class OriginalInference:
  """The original network in eval mode on the same network inputs as ours.

  ``config`` is the preset name (the original's ``<config>_config``), ``device`` 'cpu' or
  'cuda'; the weights are the checkpoint file ``weights`` (loaded by the original's own
  ``load_weights``), else ``variables`` converted to its state_dict. Detect is set to ``nms``.
  """

  def __init__(self, original: Any, torch: Any, config: str, device: str, nms: str,
               weights: str | None, variables: dict, net_inputs: Sequence[np.ndarray],
               batches: Sequence[Batch]):
    self.original, self.torch, self.batches = original, torch, batches
    original.set_cfg(f'{config}_config')
    # eval.py's evaluate() sets this unconditionally (the config does not define it, and
    # layers/output_utils.postprocess reads it)
    original.config_module.cfg.mask_proto_debug = False
    if device == 'cuda':
      torch.set_default_tensor_type('torch.cuda.FloatTensor')  # as eval.py
    net = original.Yolact()
    if weights:
      net.load_weights(weights)
    else:
      net.load_state_dict(to_torch_state_dict(variables, torch), strict=True)
    net.eval()
    self.net = net.cuda() if device == 'cuda' else net
    self.capture = install_output_capture(self.net)
    check_original_nms(self.capture.detect, nms)
    self.capture.use_fast_nms, self.capture.use_cross_class_nms = NMS_TO_ORIGINAL_FLAGS[nms]
    self.device = torch.device(device)
    self.inputs = [nchw_tensor(x, torch, self.device) for x in net_inputs]

  def detect_settings(self) -> dict[str, Any]:
    """The original Detect's settings as this run uses them."""
    settings = {name: getattr(self.capture.detect, name, None) for name in DETECT_SETTINGS}
    settings['max_num_detections'] = getattr(self.original.config_module.cfg,
                                             'max_num_detections', None)
    return settings

  def _sync(self) -> None:
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def end_to_end(self, k: int) -> list[dict]:
    """Batch ``k`` through network, Detect and postprocess (score threshold 0): per image the
    layout of :func:`yolact_jax.compare.original.original_result`."""
    _, sizes, _ = self.batches[k]
    with self.torch.no_grad():
      out = self.net(self.inputs[k])
      results = []
      for i, (h, w) in enumerate(sizes.tolist()):
        t = self.original.postprocess(out, w, h, batch_idx=i, score_threshold=0)
        results.append(original_result(*t[:4], h, w))
    self._sync()
    return results

  def network(self, k: int) -> None:
    """Batch ``k`` through the network alone (Detect bypassed)."""
    self.capture.bypass = True
    try:
      with self.torch.no_grad():
        self.net(self.inputs[k])
      self._sync()
    finally:
      self.capture.bypass = False

  def recorded(self, k: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """:meth:`end_to_end` of batch ``k`` and the head outputs Detect was handed."""
    self.capture.record = True
    try:
      results = self.end_to_end(k)
    finally:
      self.capture.record = False
    return results, {key: tensor_to_numpy(v) for key, v in self.capture.outputs.items()}

  def float64(self, k: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """:meth:`recorded` of batch ``k`` from a float64 copy of the original network, Detect and
    postprocess (the true function on these weights, the yardstick of
    shared/reference/README.md): per image results and the head outputs (``conf`` as softmax
    probabilities, as the original's eval-mode forward hands them to Detect). The copy is built
    on first use; CPU."""
    torch = self.torch
    if not hasattr(self, 'net64'):
      self.net64 = self.original.Yolact()  # a second copy: same weights, widened
      self.net64.load_state_dict({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
      self.net64.eval()  # (the original's train() returns None: no chaining)
      self.net64.double()
      self.capture64 = install_output_capture(self.net64)
      (self.capture64.use_fast_nms,
       self.capture64.use_cross_class_nms) = (self.capture.use_fast_nms,
                                              self.capture.use_cross_class_nms)
    _, sizes, _ = self.batches[k]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # tensors the forward creates, as the weights
    self.capture64.record = True
    try:
      with torch.no_grad():
        out = self.net64(self.inputs[k].cpu().double())
        results = [original_result(*self.original.postprocess(out, w, h, batch_idx=i,
                                                              score_threshold=0)[:4], h, w)
                   for i, (h, w) in enumerate(sizes.tolist())]
    finally:
      torch.set_default_dtype(default)
      self.capture64.record = False
    return results, {key: tensor_to_numpy(v) for key, v in self.capture64.outputs.items()}


# What runs as "ours": the live jitted program, the exported StableHLO artefact (serialized,
# read back and called through jax.export, as yolact_jax.serving runs it), or the program
# converted to ONNX and run by ONNX Runtime (needs the [onnx] extra and jax2onnx).
OURS_KINDS = ('live', 'stablehlo', 'onnx')


class OurInference:
  """Our network and our end-to-end program (:class:`yolact_jax.predict.InferenceProgram`),
  compiled for the batches' shapes; the compile time is ``compile_s``. ``kind`` 'stablehlo'
  runs the end-to-end program from its exported, serialized form instead (the network and the
  raw outputs stay the live ones)."""

  def __init__(self, cfg: Any, variables: dict, net_inputs: Sequence[np.ndarray],
               batches: Sequence[Batch], canvas_hw: tuple[int, int], kind: str = 'live'):
    import jax
    from yolact_jax.model.yolact import Yolact
    from yolact_jax.predict import InferenceProgram
    if kind not in OURS_KINDS:
      raise ValueError(f'--ours must be one of {OURS_KINDS}, got {kind!r}')
    self.cfg, self.batches, self.kind = cfg, batches, kind
    model = Yolact(cfg.model, num_classes=cfg.num_classes)
    self.variables = jax.device_put(variables)
    self.program = InferenceProgram(cfg)
    self.inputs = [jax.device_put(x) for x in net_inputs]
    t0 = time.perf_counter()
    if kind == 'live':
      self.e2e = self.program.from_network_input.lower(
          self.variables, self.inputs[0], batches[0][1], canvas_hw=canvas_hw).compile()
    else:
      make = _exported_end_to_end if kind == 'stablehlo' else _onnx_end_to_end
      self.e2e = make(cfg, variables, len(batches[0][1]), canvas_hw)
      jax.block_until_ready(self.e2e(self.variables, self.inputs[0], batches[0][1]))
    self.net = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        self.variables, self.inputs[0]).compile()
    self.compile_s = time.perf_counter() - t0

  def end_to_end(self, k: int) -> list[dict]:
    """Batch ``k`` end to end, results on the host in the layout of ``original_result``."""
    import jax
    from yolact_jax.predict import unpack_detections
    sizes = self.batches[k][1]
    outputs = jax.device_get(self.e2e(self.variables, self.inputs[k], sizes))
    return [ours_result(d) for d in unpack_detections(outputs, sizes, len(sizes),
                                                      self.cfg.dataset.class_names)]

  def network(self, k: int) -> None:
    import jax
    jax.block_until_ready(self.net(self.variables, self.inputs[k]))

  def raw(self, k: int) -> dict[str, np.ndarray]:
    """The head outputs of batch ``k`` (``conf`` as softmax probabilities) and the priors."""
    import jax
    raw = jax.device_get(self.net(self.variables, self.inputs[k]))
    return jax.device_get({'loc': raw['loc'], 'conf': jax.nn.softmax(raw['conf'], axis=-1),
                           'mask': raw['coefs'], 'proto': raw['proto'],
                           'priors': self.program.priors})


def _exported_end_to_end(cfg: Any, variables: dict, batch: int, canvas_hw: tuple[int, int]):
  """The end-to-end program exported to StableHLO (network input entry, CPU), serialized and
  deserialized, as ``(variables, net_input, sizes) -> outputs``."""
  import jax
  from jax import export as jax_export
  from yolact_jax.serving.export import export_program, make_spec
  spec = make_spec(cfg, canvas_hw=canvas_hw, batch=batch, static_batch=True)
  exported, leaves = export_program(spec, variables, platforms=('cpu',), entry='network_input')
  restored = jax_export.deserialize(exported.serialize())
  weights = [jax.device_put(leaf) for leaf in leaves]
  call = jax.jit(restored.call)
  return lambda variables, net_input, sizes: call(weights, net_input, sizes)


def _onnx_end_to_end(cfg: Any, variables: dict, batch: int, canvas_hw: tuple[int, int]):
  """The end-to-end program converted to ONNX (network input entry) in an ONNX Runtime CPU
  session (:func:`yolact_jax.serving.onnx_runtime.session_options`: one intra-op thread per
  CPU this process may run on, as the other side's, and no spinning once a call ends, so that
  its idle threads do not slow the original's run that follows), as
  ``(variables, net_input, sizes) -> outputs`` (numpy)."""
  import jax
  import onnxruntime as ort
  from yolact_jax.predict import OUTPUT_KEYS
  from yolact_jax.serving import artefact as af
  from yolact_jax.serving.export import make_spec
  from yolact_jax.serving.onnx_export import program_model
  from yolact_jax.serving.onnx_runtime import session_options
  spec = make_spec(cfg, canvas_hw=canvas_hw, batch=batch, static_batch=True)
  model = program_model(spec, jax.device_get(variables), entry='network_input')
  session = ort.InferenceSession(model.SerializeToString(), session_options(spinning=False),
                                 providers=['CPUExecutionProvider'])
  names = [o.name for o in session.get_outputs()]

  def run(variables, net_input, sizes):
    del variables  # the weights are the graph's initializers
    feeds = dict(zip(af.INPUT_NAMES, (np.asarray(net_input, np.float32),
                                      np.asarray(sizes, np.int32))))
    outputs = dict(zip(names, session.run(None, feeds)))
    return {key: outputs[key] for key in OUTPUT_KEYS}
  return run


def compare_outputs(ours: OurInference, theirs: OriginalInference, batches: Sequence[Batch],
                    match_iou: float, batch_size: int, float64_yardstick: bool = False
                    ) -> tuple[dict, list[dict], dict | None]:
  """(raw output differences merged over the batches, per real image the detection comparison
  with its ``image`` index and ``image_hw``, and with ``float64_yardstick`` both sides against
  the original in float64: raw-output errors and detection agreement; else None)."""
  raw_diffs, per_image, yardsticks = [], [], []
  detections64: dict[str, list[dict]] = {'ours': [], 'original': []}
  for k, (_, sizes, count) in enumerate(batches):
    their_results, their_raw = theirs.recorded(k)
    our_raw = ours.raw(k)
    raw_diffs.append(raw_output_diff(our_raw, their_raw))
    our_results = ours.end_to_end(k)
    if float64_yardstick:
      true_results, true_raw = theirs.float64(k)
      yardsticks.append(yardstick_diff(our_raw, their_raw, true_raw))
      for i in range(count):
        detections64['ours'].append(compare_detections(our_results[i], true_results[i],
                                                       match_iou))
        detections64['original'].append(compare_detections(their_results[i], true_results[i],
                                                           match_iou))
    for i in range(count):
      entry = compare_detections(our_results[i], their_results[i], match_iou)
      entry['image'] = k * batch_size + i
      entry['image_hw'] = sizes[i].tolist()
      per_image.append(entry)
  yardstick = None
  if float64_yardstick:
    yardstick = {'raw_outputs': merge_yardstick(yardsticks),
                 'detections': {side: summarize_detection_comparison(entries)
                                for side, entries in detections64.items()}}
  return merge_raw_diffs(raw_diffs), per_image, yardstick


def time_inference(ours: OurInference, theirs: OriginalInference, num_batches: int,
                   warmup: int, repeats: int, batch_size: int) -> dict[str, Any]:
  """Each side's ``network`` and ``end_to_end``, the four loops interleaved round-robin.

  ``end_to_end``: from the network input (in memory / on the device) to per-image numpy results
  on the host (the original's ``eval.py --benchmark`` scope); ``network``: the network alone (the
  original's forward with Detect bypassed, ours its own jitted program). Each call synchronises
  (CUDA synchronised, JAX outputs fetched) inside the timer."""
  times = time_interleaved({('ours', 'network'): ours.network,
                            ('ours', 'end_to_end'): ours.end_to_end,
                            ('original', 'network'): theirs.network,
                            ('original', 'end_to_end'): theirs.end_to_end},
                           num_batches, warmup, repeats)
  return speed_summary({stage: t for (side, stage), t in times.items() if side == 'ours'},
                       {stage: t for (side, stage), t in times.items() if side == 'original'},
                       batch_size)
