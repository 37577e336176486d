"""One training step side by side: the same weights, batch and learning rate on both sides;
loss terms and parameter updates compared; both sides' steps timed.

The original's step is its ``train.py`` iteration: ``net.train()`` (BatchNorm frozen as train.py
decides from the batch size), forward, ``MultiBoxLoss``, the sum of its terms, backward,
``torch.optim.SGD(momentum, weight_decay).step()``. Ours is the jitted, donated step of
:func:`yolact_jax.train_step.build_training`. Both use the learning rate of iteration 0.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from typing import Any, Callable

import numpy as np

from yolact_jax.bench.timing import compile_program, speed_summary, time_interleaved
from yolact_jax.compare.original import nchw_tensor, tensor_to_numpy
from yolact_jax.compare.weights import to_torch_state_dict

INPUT_NOISE_RELATIVE = 1e-6  # the original against itself: its input perturbed by this much


def synthetic_targets(batch_size: int, size: int, objects: int, num_classes: int, seed: int
                      ) -> dict[str, np.ndarray]:
  """Seeded ground truth at the network input size: ``objects`` ellipses or rectangles per image.

  ``boxes`` [B, n, 4] relative (x1, y1, x2, y2, the tight box of the mask), ``labels`` [B, n]
  0-based foreground classes (the original's target layout; ``num_classes`` includes the
  background), ``masks`` [B, n, size, size] uint8.
  """
  rng = np.random.default_rng(seed)
  boxes = np.zeros((batch_size, objects, 4), np.float32)
  masks = np.zeros((batch_size, objects, size, size), np.uint8)
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  for b in range(batch_size):
    for g in range(objects):
      w, h = rng.uniform(0.12, 0.35, 2) * size
      x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
      if g % 2:  # rectangle
        m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
      else:  # ellipse
        m = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
      ys, xs = np.nonzero(m)
      masks[b, g] = m
      boxes[b, g] = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size
  labels = rng.integers(0, num_classes - 1, (batch_size, objects)).astype(np.int32)
  return {'boxes': boxes, 'labels': labels, 'masks': masks}


def our_train_batch(images: np.ndarray, targets: dict[str, np.ndarray], cfg: Any
                    ) -> dict[str, np.ndarray]:
  """The targets packed as our data pipeline packs them (:func:`yolact_jax.data.loader.
  pack_example`: ``cfg.train.max_instances`` padded slots with a validity mask, GT masks
  downsampled to the proto and semantic sizes as the original's loss does). ``targets`` holds
  per image ``boxes``, ``labels`` and ``masks`` (arrays [B, n, ...], or sequences of per-image
  arrays with their own n)."""
  from yolact_jax.data.augment import TransformedSample
  from yolact_jax.data.loader import pack_example
  from yolact_jax.trainer import BATCH_KEYS, pipeline_options
  options = pipeline_options(cfg)
  batch_size = len(targets['labels'])
  n = max(len(labels) for labels in targets['labels'])
  if n > options.max_instances:  # the pipeline would drop objects the original keeps
    raise ValueError(f'{n} objects per image but train.max_instances is {options.max_instances}')
  examples = [pack_example(
      TransformedSample(image=images[b].astype(np.float32), masks=targets['masks'][b],
                        boxes=targets['boxes'][b], labels=targets['labels'][b], num_crowds=0),
      image_id=b, orig_hw=images.shape[1:3], max_instances=options.max_instances,
      proto_hw=options.proto_hw, segm_hw=options.segm_hw) for b in range(batch_size)]
  return {k: np.stack([e[k] for e in examples]) for k in BATCH_KEYS}


def original_train_targets(targets: dict[str, np.ndarray], torch: Any, device: Any
                           ) -> tuple[list, list, list]:
  """The targets as the original's ``detection_collate`` hands them to ``MultiBoxLoss``: per image
  a [n, 5] tensor (box, label), a [n, H, W] float mask tensor, and the crowd count (0)."""
  gts, masks = [], []
  for b in range(targets['labels'].shape[0]):
    gt = np.concatenate([targets['boxes'][b], targets['labels'][b][:, None].astype(np.float32)],
                        axis=1)
    gts.append(torch.from_numpy(np.ascontiguousarray(gt, np.float32)).to(device))
    masks.append(torch.from_numpy(targets['masks'][b].astype(np.float32)).to(device))
  return gts, masks, [0] * len(gts)


def compare_losses(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, dict]:
  """Per loss term of the original (and ``total``): both values, their absolute and relative
  difference."""
  out = {}
  for key, value in theirs.items():
    if key not in ours:
      out[key] = {'original': float(value), 'ours': None}
      continue
    a, b = float(ours[key]), float(value)
    out[key] = {'ours': a, 'original': b, 'abs_diff': abs(a - b),
                'rel_diff': abs(a - b) / max(abs(b), 1e-12)}
  return out


def compare_updates(before: dict[str, np.ndarray], ours: dict[str, np.ndarray],
                    theirs: dict[str, np.ndarray]) -> dict[str, Any]:
  """One optimiser step from the same state on both sides (state_dict keys and layout): the
  difference of the two updates, against the size of the original's update.

  ``relative`` = max |update_ours - update_original| / max |update_original| over every float
  tensor; per tensor, the same ratio against its own largest update (``per_tensor_relative``:
  median and p90 over the tensors, and the worst one). Tensors neither side changed (frozen
  BatchNorm) are counted in ``unchanged``.
  """
  max_diff, max_update, worst, worst_ratio, changed, unchanged = 0.0, 0.0, None, -1.0, 0, 0
  ratios = []
  for key, old in before.items():
    old = np.asarray(old)
    if not np.issubdtype(old.dtype, np.floating):
      continue
    du = np.asarray(ours[key], np.float64) - old
    dt = np.asarray(theirs[key], np.float64) - old
    diff, size = float(np.max(np.abs(du - dt), initial=0)), float(np.max(np.abs(dt), initial=0))
    if size == 0 and diff == 0:
      unchanged += 1
      continue
    changed += 1
    max_diff, max_update = max(max_diff, diff), max(max_update, size)
    ratio = diff / max(size, 1e-30)
    ratios.append(ratio)
    if ratio > worst_ratio:
      worst, worst_ratio = key, ratio
  return {'max_abs_update_diff': max_diff, 'max_abs_update': max_update,
          'relative': max_diff / max(max_update, 1e-30), 'worst_key': worst,
          'worst_key_relative': worst_ratio if worst else None,
          'per_tensor_relative_median': float(np.median(ratios)) if ratios else None,
          'per_tensor_relative_p90': float(np.percentile(ratios, 90)) if ratios else None,
          'tensors_changed': changed, 'tensors_unchanged': unchanged}


def loss_criterion_call(criterion: Any) -> Callable[..., Any]:
  """The original's ``MultiBoxLoss.forward`` took ``(predictions, targets, masks, num_crowds)``
  until it gained a leading ``net`` argument (mid 2019): a caller for either signature."""
  import inspect
  params = list(inspect.signature(criterion.forward).parameters)
  if params and params[0] == 'net':
    return lambda net, *args: criterion(net, *args)
  return lambda net, *args: criterion(*args)


def original_trainer(original: Any, torch: Any, variables: dict, device: Any, lr: float,
                     momentum: float, decay: float, image: Any, gts: list, gt_masks: list,
                     num_crowds: list) -> tuple[Any, Callable[..., dict[str, float]],
                                                 Callable[[], None]]:
  """A fresh original network from ``variables`` in training mode and its train.py iteration on
  one fixed batch: ``(net, step, reset)``; ``step()`` returns the loss terms and ``total``;
  ``reset()`` puts the weights and the optimiser back to where they started."""
  original_cfg = original.config_module.cfg
  net = original.Yolact()
  net.load_state_dict(to_torch_state_dict(variables, torch), strict=True)
  net.train()  # Yolact.train() re-applies freeze_bn when cfg.freeze_bn
  net = net.to(device)
  multibox = importlib.import_module('layers.modules.multibox_loss')
  criterion = loss_criterion_call(multibox.MultiBoxLoss(
      num_classes=original_cfg.num_classes, pos_threshold=original_cfg.positive_iou_threshold,
      neg_threshold=original_cfg.negative_iou_threshold,
      negpos_ratio=original_cfg.ohem_negpos_ratio))
  step, reset = sgd_iteration(torch, net, lr, momentum, decay,
                              lambda: criterion(net, net(image), gts, gt_masks, num_crowds),
                              image.is_cuda)
  return net, step, reset


def sgd_iteration(torch: Any, module: Any, lr: float, momentum: float, decay: float,
                  losses: Callable[[], dict], cuda: bool = False
                  ) -> tuple[Callable[..., dict[str, float]], Callable[[], None]]:
  """A PyTorch training iteration of ``module`` on one fixed batch: ``(step, reset)``.

  ``step()`` runs ``losses()`` (loss terms, tensors), backward on the sum of their means,
  ``torch.optim.SGD(momentum, weight_decay).step()`` unless the sum is not finite (the
  original's train.py skips such a step) and returns each term and ``total`` as floats;
  ``reset()`` puts the weights and the optimiser back to where they started."""
  optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
  initial = copy.deepcopy((module.state_dict(), optimizer.state_dict()))

  def reset() -> None:
    module.load_state_dict(initial[0])
    optimizer.load_state_dict(initial[1])

  def step(_: int = 0) -> dict[str, float]:
    optimizer.zero_grad()
    terms = losses()
    loss = sum(v.mean() for v in terms.values())
    loss.backward()
    if torch.isfinite(loss).item():
      optimizer.step()
    if cuda:
      torch.cuda.synchronize()
    return {**{k: float(v.detach().mean()) for k, v in terms.items()},
            'total': float(loss.detach())}

  return step, reset


@dataclasses.dataclass
class OurTrainer:
  """Our compiled train step on one fixed batch, restartable from the initial state."""
  step_fn: Any  # the compiled (state, batch) -> (state, metrics), state donated
  initial: Any  # the step-0 TrainState (never donated: every start copies it)
  batch: dict
  compile_s: float
  state: Any = None

  def reset(self) -> None:
    import jax
    import jax.numpy as jnp
    self.state = jax.tree_util.tree_map(jnp.copy, self.initial)

  def step(self, _: int = 0) -> dict:
    import jax
    self.state, metrics = self.step_fn(self.state, self.batch)
    return jax.block_until_ready(metrics)

  def variables(self) -> dict:
    import jax
    return jax.device_get({'params': self.state.params, 'batch_stats': self.state.batch_stats})


def our_trainer(training: Any, variables: dict, batch: dict, seed: int) -> OurTrainer:
  """``training.step`` (:func:`yolact_jax.train_step.build_training`) compiled for ``batch``,
  starting from ``variables`` with the TrainState's random key from ``seed``."""
  state = training.init_state(variables, seed=seed)
  step, seconds = compile_program(training.step, state, batch)
  trainer = OurTrainer(step, state, batch, seconds['lower_s'] + seconds['compile_s'])
  trainer.reset()
  return trainer


def _state_numpy(net: Any) -> dict[str, np.ndarray]:
  return {k: tensor_to_numpy(v) for k, v in net.state_dict().items()}


# A reference side's training step on one batch: ``make(images [B, S, S, 3], lr, freeze_bn,
# targets) -> (state, step, reset)``; ``state()`` is its weights as the original's state_dict
# (numpy), ``step()`` runs one step and returns the loss terms under our names and ``total``,
# ``reset()`` puts the weights and optimiser back.
ReferenceTrainer = Callable[..., tuple[Callable[[], dict], Callable[..., dict], Callable[[], None]]]


def original_reference(original: Any, torch: Any, device: Any, variables: dict, momentum: float,
                       decay: float, seed: int) -> ReferenceTrainer:
  """The original's train.py iteration (:func:`original_trainer`) as a reference trainer."""
  def make(images: np.ndarray, lr: float, freeze_bn: bool, targets: dict) -> tuple:
    original.config_module.cfg.freeze_bn = freeze_bn  # train.py: batch_size // num_gpus < 6
    gts, gt_masks, num_crowds = original_train_targets(targets, torch, device)
    torch.manual_seed(seed)  # masks_to_train subsampling, when an image has that many positives
    net, step, reset = original_trainer(original, torch, variables, device, lr, momentum, decay,
                                        nchw_tensor(images, torch, device), gts, gt_masks,
                                        num_crowds)
    return (lambda: _state_numpy(net)), step, reset
  return make


def reference_self_check(make: Callable, net_input: np.ndarray, seed: int,
                         losses: dict[str, float], after: dict[str, np.ndarray],
                         before: dict[str, np.ndarray]) -> dict[str, Any]:
  """The reference against itself, its input perturbed by ``INPUT_NOISE_RELATIVE``: how far its
  own first step (``losses``, weights ``after`` from ``before``) moves under float32-level
  noise (its hard-negative mining flips at the ranking boundary). ``make(images)`` builds its
  trainer."""
  rng = np.random.default_rng(seed)
  noise = rng.uniform(-INPUT_NOISE_RELATIVE, INPUT_NOISE_RELATIVE, net_input.shape)
  state, step, _ = make((net_input * (1 + noise)).astype(np.float32))
  noisy_losses = step()
  return {'input_noise_relative': INPUT_NOISE_RELATIVE,
          'losses': compare_losses(noisy_losses, losses),
          'update': compare_updates(before, state(), after)}


def train_side_by_side(cfg: Any, variables: dict, reference: ReferenceTrainer,
                       net_input: np.ndarray, *, objects: int, seed: int, warmup: int,
                       repeats: int, timed: bool = True) -> dict[str, Any]:
  """One training step from ``variables`` on the batch ``net_input`` [B, S, S, 3] with
  ``objects`` seeded objects per image on both sides, ours and the ``reference``
  (:func:`original_reference`, or mmdetection's): loss terms and the parameter update compared,
  and the reference against itself on a perturbed input for scale; then, when ``timed``,
  ``warmup`` untimed and ``repeats`` timed steps per side, interleaved, each from the initial
  weights and optimiser state (a step's cost does not depend on the weights; repeated steps at
  the first iteration's learning rate can diverge from random weights)."""
  import jax
  from yolact_jax import train_step as ts
  from yolact_jax.checkpoint.convert import variables_to_state_dict

  batch_size = net_input.shape[0]
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size))
  training = ts.build_training(cfg)
  freeze_bn = training.freeze_bn
  lr = float(ts.learning_rate(training.schedule, 0))
  targets = synthetic_targets(batch_size, cfg.max_size, objects, cfg.num_classes, seed)
  batch = jax.device_put(our_train_batch(net_input, targets, cfg))
  before = variables_to_state_dict(variables)
  make = lambda images: reference(images, lr, freeze_bn, targets)  # noqa: E731

  theirs_state, theirs_step, theirs_reset = make(net_input)
  ours = our_trainer(training, variables, batch, seed)
  theirs_losses = theirs_step()  # the first step from the same state on both sides
  theirs_after = theirs_state()
  metrics = jax.device_get(ours.step())
  ours_losses = {k: float(v) for k, v in metrics.items() if k in theirs_losses}
  ours_losses['total'] = float(metrics['loss'])
  ours_after = variables_to_state_dict(ours.variables())
  out: dict[str, Any] = {
      'batch_size': batch_size, 'objects_per_image': objects, 'freeze_bn': freeze_bn,
      'learning_rate': lr, 'momentum': cfg.train.momentum, 'weight_decay': cfg.train.decay,
      'num_positives': int(metrics['num_pos']), 'masks_to_train': cfg.loss.masks_to_train,
      'losses': compare_losses(ours_losses, theirs_losses),
      'update': compare_updates(before, ours_after, theirs_after),
      'original_self': reference_self_check(make, net_input, seed, theirs_losses, theirs_after,
                                            before),
      'ours_compile_s': ours.compile_s}
  if timed:
    times = time_interleaved({'ours': ours.step, 'original': theirs_step}, 1, warmup, repeats,
                             setup={'ours': ours.reset, 'original': theirs_reset})
    out['speed'] = speed_summary({'train_step': times['ours']},
                                 {'train_step': times['original']}, batch_size)
  return out
