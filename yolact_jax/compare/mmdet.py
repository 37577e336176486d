"""mmdetection's YOLACT as the reference side (``yolact-jax compare --reference mmdet``).

mmdetection (3.x, with mmengine and mmcv-lite) is imported at run time; nothing of it is copied
here. ``import mmdet.models`` imports ``mmcv.ops``, whose compiled extension mmcv-lite lacks and
whose operators YOLACT never calls: :func:`mmdet_runtime` stands a stub in for it. The model is
built by mmdetection's own registry from its own config file (``yolact_r50_1xb8-55e_coco``,
shipped in the mmdet package), with the sizes set from our preset (:func:`model_config`: depth
and widths, classes, anchors, prototypes, Detect), and gets our variables through
:mod:`yolact_jax.checkpoint.mmdet`. :class:`MmdetInference` has the interface of
:class:`yolact_jax.compare.inference.OriginalInference`, so the comparison, the yardstick and the
timing are the same; head outputs are handed over in our layout (background first).
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
from typing import Any, Iterator, Sequence

import numpy as np

from yolact_jax.compare.inputs import Batch
from yolact_jax.compare.original import nchw_tensor, tensor_to_numpy

MMDET_CONFIG = 'yolact/yolact_r50_1xb8-55e_coco.py'  # in mmdet's package (.mim/configs)
RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}


@contextlib.contextmanager
def mmdet_runtime() -> Iterator[Any]:
  """mmdetection importable (``mmcv.ops`` stubbed) with its modules registered; yields the
  ``mmdet`` package."""
  from yolact_jax.compare.import_stubs import stub_missing_module
  try:
    import mmdet  # noqa: F401
  except ImportError as e:
    raise ImportError('--reference mmdet needs mmdetection 3.x: pip install --no-deps '
                      'mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 (and their small '
                      'dependencies: addict yapf termcolor rich terminaltables shapely '
                      'scipy)') from e
  with stub_missing_module('mmcv.ops', replace=True):
    import mmdet.models  # noqa: F401
    from mmdet.utils import register_all_modules
    register_all_modules()
    yield mmdet


def model_config(cfg: Any, mmdet: Any) -> Any:
  """mmdetection's model config for our preset ``cfg``: its own YOLACT config file with the
  sizes of ``cfg`` and no ImageNet download. Raises ValueError for what mmdetection's YOLACT
  cannot build (another backbone depth, DCN, the mask-IoU network, per-level heads)."""
  from mmengine.config import Config, ConfigDict
  m = cfg.model
  depth = RESNET_DEPTHS.get(tuple(m.backbone.layers))
  if (m.backbone.kind != 'resnet' or depth is None or any(m.backbone.dcn_layers)
      or m.use_maskiou or not m.head.share_prediction_module or len(m.head.extra_head_net) != 1):
    raise ValueError(f'{cfg.name}: mmdetection\'s YOLACT has a ResNet-50/101 without DCN, one '
                     'shared head conv and no mask-IoU network')
  path = pathlib.Path(mmdet.__file__).parent / '.mim' / 'configs' / MMDET_CONFIG
  model = copy.deepcopy(Config.fromfile(str(path)).model.to_dict())
  width, features, size = m.backbone.base_width, m.fpn.num_features, cfg.max_size
  classes = len(cfg.dataset.class_names)
  from yolact_jax.model.shapes import feature_sizes
  sizes = feature_sizes(cfg)
  model['backbone'].update(depth=depth, base_channels=width, init_cfg=None)
  model['neck'].update(in_channels=[width * 4 * 2 ** i for i in range(4)],
                       out_channels=features)
  head = model['bbox_head']
  head.update(num_classes=classes, in_channels=features, feat_channels=m.head.extra_head_net[0],
              num_protos=m.mask.mask_dim)
  head['anchor_generator'].update(
      base_sizes=[s / 3 for (s,) in m.anchors.pred_scales],
      strides=[size / n for n in sizes], centers=[(size * 0.5 / n,) * 2 for n in sizes])
  model['mask_head'].update(
      num_classes=classes, in_channels=features, num_protos=m.mask.mask_dim,
      proto_channels=tuple(c for c, _, _ in m.mask.proto_net),
      proto_kernel_sizes=tuple(k for _, k, _ in m.mask.proto_net))
  d = cfg.detect
  model['test_cfg'].update(nms_pre=d.candidates_per_level, score_thr=d.nms_conf_thresh,
                           iou_thr=d.nms_thresh, top_k=d.nms_top_k,
                           max_per_img=d.max_num_detections)
  return ConfigDict(model)  # the heads read test_cfg.score_thr & co. as attributes


def build_model(cfg: Any, variables: dict, torch: Any, mmdet: Any, device: str = 'cpu') -> Any:
  """mmdetection's YOLACT for ``cfg`` in eval mode, holding ``variables`` (strict load)."""
  from mmdet.registry import MODELS

  from yolact_jax.checkpoint import convert, mmdet as mmdet_keys
  model = MODELS.build(model_config(cfg, mmdet))
  state = mmdet_keys.from_original(convert.variables_to_state_dict(variables), cfg.num_classes,
                                   'mmdet3', len(cfg.model.backbone.selected_layers))
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                        strict=True)
  return model.eval().to(device)


def raw_outputs(model: Any, inputs: Any, torch: Any, size: int) -> dict[str, np.ndarray]:
  """The head outputs in our layout: ``loc`` [B, P, 4], ``conf`` softmax [B, P, C + 1] with
  background first, ``mask`` [B, P, k], ``proto`` [B, Hp, Wp, k] and ``priors`` [P, 4] (cx, cy,
  w, h) relative (mmdetection's pixel anchors / ``size``)."""
  with torch.no_grad():
    x = model.extract_feat(inputs)
    cls, reg, coeff = model.bbox_head.forward(x)
    proto = model.mask_head.protonet(x[0]).permute(0, 2, 3, 1)
    anchors = model.bbox_head.prior_generator.grid_priors(
        [c.shape[-2:] for c in cls], device=inputs.device)
  flat = lambda maps, n: torch.cat(  # noqa: E731
      [t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, n) for t in maps], 1)
  logits = flat(cls, model.bbox_head.cls_out_channels)
  conf = torch.softmax(torch.cat([logits[..., -1:], logits[..., :-1]], -1), -1)
  boxes = torch.cat(anchors).double()
  priors = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / size
  return {'loc': tensor_to_numpy(flat(reg, 4)), 'conf': tensor_to_numpy(conf),
          'mask': tensor_to_numpy(flat(coeff, model.mask_head.num_protos)),
          'proto': tensor_to_numpy(proto), 'priors': tensor_to_numpy(priors.float())}


def data_samples(sizes: np.ndarray, size: int) -> list:
  """mmdetection's per-image metadata for network inputs of ``size`` x ``size`` made from images
  of ``sizes`` [B, 2] (h, w): its Resize's ``scale_factor`` (new / old, w then h)."""
  from mmdet.structures import DetDataSample
  samples = []
  for h, w in sizes.tolist():
    sample = DetDataSample()
    sample.set_metainfo({'img_shape': (size, size), 'ori_shape': (h, w),
                         'scale_factor': (size / w, size / h), 'pad_shape': (size, size),
                         'batch_input_shape': (size, size)})
    samples.append(sample)
  return samples


def mmdet_result(instances: Any, h: int, w: int) -> dict[str, np.ndarray]:
  """mmdetection's ``pred_instances`` of one image -> the layout of
  :func:`yolact_jax.compare.original.original_result` (boxes as mmdetection's floats)."""
  n = len(instances)
  scores = tensor_to_numpy(instances.scores).reshape(n).astype(np.float32)
  masks = tensor_to_numpy(instances.masks) if n else np.zeros((0, h, w), bool)
  return {'classes': tensor_to_numpy(instances.labels).reshape(n).astype(np.int64),
          'scores': scores, 'mask_scores': scores,
          'boxes': tensor_to_numpy(instances.bboxes).reshape(n, 4).astype(np.float32),
          'masks': np.asarray(masks).reshape(n, h, w).astype(np.uint8)}


class MmdetInference:
  """mmdetection's YOLACT on the same network inputs as ours (see the module docstring); the
  weights are ``variables`` (ours, converted), Detect its own with the preset's settings."""

  def __init__(self, mmdet: Any, torch: Any, cfg: Any, device: str, variables: dict,
               net_inputs: Sequence[np.ndarray], batches: Sequence[Batch]):
    self.torch, self.cfg, self.batches = torch, cfg, batches
    self.model = build_model(cfg, variables, torch, mmdet, device)
    self.device = torch.device(device)
    self.inputs = [nchw_tensor(x, torch, self.device) for x in net_inputs]

  def detect_settings(self) -> dict[str, Any]:
    return dict(self.model.test_cfg)

  def _sync(self) -> None:
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def _predict(self, model: Any, inputs: Any, k: int) -> list[dict]:
    sizes = self.batches[k][1]
    with self.torch.no_grad():
      samples = model.predict(inputs, data_samples(sizes, self.cfg.max_size))
    return [mmdet_result(s.pred_instances, h, w) for s, (h, w) in zip(samples, sizes.tolist())]

  def end_to_end(self, k: int) -> list[dict]:
    """Batch ``k`` through the network, Detect and the masks at each image's size."""
    results = self._predict(self.model, self.inputs[k], k)
    self._sync()
    return results

  def network(self, k: int) -> None:
    with self.torch.no_grad():
      x = self.model.extract_feat(self.inputs[k])
      self.model.bbox_head.forward(x)
      self.model.mask_head.protonet(x[0])
    self._sync()

  def recorded(self, k: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """:meth:`end_to_end` of batch ``k`` and its head outputs (:func:`raw_outputs`)."""
    return (self.end_to_end(k),
            raw_outputs(self.model, self.inputs[k], self.torch, self.cfg.max_size))

  def float64(self, k: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """:meth:`recorded` from a float64 copy of the model (the true function on these weights;
    mmdetection's anchors stay its float32 ones), CPU."""
    torch = self.torch
    if not hasattr(self, 'model64'):
      self.model64 = copy.deepcopy(self.model).cpu().double()
    inputs = self.inputs[k].cpu().double()
    return (self._predict(self.model64, inputs, k),
            raw_outputs(self.model64, inputs, torch, self.cfg.max_size))


# --------------------------------------------------------------------------------- training


def train_samples(targets: dict, size: int, torch: Any) -> list:
  """mmdetection's training data samples for ground truth at the network input size
  (``targets``: per image ``boxes`` relative x1y1x2y2, ``labels`` 0-based, ``masks`` [n, S, S];
  arrays [B, n, ...] or sequences of per-image arrays)."""
  from mmdet.structures.mask import BitmapMasks
  from mmengine.structures import InstanceData
  samples = data_samples(np.full((len(targets['labels']), 2), size), size)  # scale 1
  for b, sample in enumerate(samples):
    sample.gt_instances = InstanceData(
        bboxes=torch.from_numpy(np.asarray(targets['boxes'][b], np.float32) * size),
        labels=torch.from_numpy(np.asarray(targets['labels'][b], np.int64)),
        masks=BitmapMasks(np.asarray(targets['masks'][b], np.uint8).reshape(-1, size, size),
                          size, size))
  return samples


# mmdetection's loss names -> ours.
LOSS_TERMS = {'loss_cls': 'C', 'loss_bbox': 'B', 'loss_mask': 'M', 'loss_segm': 'S'}


def loss_terms(losses: dict) -> dict[str, Any]:
  """mmdetection's loss dict (lists of per-image tensors) as our terms, each summed as its
  ``parse_losses`` does."""
  return {LOSS_TERMS[k]: sum(v) if isinstance(v, (list, tuple)) else v
          for k, v in losses.items()}


def mmdet_reference(mmdet: Any, torch: Any, device: Any, cfg: Any, variables: dict,
                    momentum: float, decay: float) -> Any:
  """mmdetection's training iteration as a :data:`yolact_jax.compare.train.ReferenceTrainer`:
  its model in training mode (BatchNorm on batch statistics, as its config), ``model.loss``,
  the sum of the terms, backward, ``torch.optim.SGD(momentum, weight_decay)``; its weights read
  back in the original's layout."""
  from yolact_jax.checkpoint import convert, mmdet as mmdet_keys
  from yolact_jax.compare.train import sgd_iteration
  keys = list(convert.variables_to_state_dict(variables))
  levels = len(cfg.model.backbone.selected_layers)

  def make(images: np.ndarray, lr: float, freeze_bn: bool, targets: dict) -> tuple:
    if freeze_bn:
      raise ValueError("mmdetection's YOLACT trains BatchNorm (norm_eval=False): compare with "
                       'train.freeze_bn=False')
    model = build_model(cfg, variables, torch, mmdet, str(device)).train()
    inputs = nchw_tensor(images, torch, device)
    samples = train_samples(targets, cfg.max_size, torch)
    step, reset = sgd_iteration(torch, model, lr, momentum, decay,
                                lambda: loss_terms(model.loss(inputs, samples)),
                                device.type == 'cuda')

    def state() -> dict[str, np.ndarray]:
      ours = mmdet_keys.to_original({k: tensor_to_numpy(v) for k, v in model.state_dict().items()},
                                    keys, cfg.num_classes, levels)
      return dict(ours)

    return state, step, reset
  return make
