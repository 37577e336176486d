"""Training side by side with the original over many steps: both start from the same weights and
receive the same batches (made once by our data pipeline, the original's augmentation, handed to
the original in its target layout); each trains with its own optimiser, schedule and BatchNorm.

``train_steps``: every loss term of every step on both sides, and how far the parameters drift
apart per tensor group, against the original's own drift when its input is perturbed by 1e-6
(the yardstick of float32 chaos). ``train_run``: whole short runs, both models scored by the
same COCO evaluator, beside the original's own seed-to-seed spread.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Iterator, Sequence

import numpy as np

from yolact_jax.compare.original import nchw_tensor, tensor_to_numpy
from yolact_jax.compare.train import INPUT_NOISE_RELATIVE, loss_criterion_call

LOSS_TERMS = ('B', 'C', 'M', 'S', 'I')
GROUPS = ('backbone', 'fpn', 'proto_net', 'prediction_layers', 'semantic_seg_conv',
          'maskiou_net')
BN_STATS = ('running_mean', 'running_var')


# ------------------------------------------------------------------------------- the batches

def original_targets(samples: Sequence[Any], torch: Any, device: Any) -> tuple[list, list, list]:
  """Transformed samples (``augment.TransformedSample``: objects first, crowds last with label
  -1, full-size masks) as the original's ``detection_collate`` hands them to ``MultiBoxLoss``:
  per image a [n, 5] tensor (relative x1y1x2y2, label), a [n, S, S] float mask tensor, and the
  number of crowds."""
  gts, masks, crowds = [], [], []
  for sample in samples:
    boxes = np.asarray(sample.boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(sample.labels, np.float32).reshape(-1, 1)
    gts.append(torch.from_numpy(np.concatenate([boxes, labels], axis=1)).to(device))
    masks.append(torch.from_numpy(np.asarray(sample.masks, np.float32)).to(device))
    crowds.append(int(sample.num_crowds))
  return gts, masks, crowds


@dataclasses.dataclass
class StudyBatch:
  """One step's batch in both layouts: ``ours`` (the trainer's packed arrays), ``images``
  [B, S, S, 3] float32 (the network input, normalised) and ``samples`` (for the original's
  targets)."""
  ours: dict
  images: np.ndarray
  samples: list


def study_batches(cfg: Any, source: Any, seed: int) -> Iterator[StudyBatch]:
  """The training stream of ``cfg`` over ``source`` with data seed ``seed`` (the trainer's, from
  step 0), step after step."""
  from yolact_jax.data import loader
  from yolact_jax.trainer import BATCH_KEYS, pipeline_options
  options = pipeline_options(cfg)
  batch_size = cfg.train.batch_size
  transform = loader.TrainBatchTransform(source, options, seed, batch_size, (0, batch_size), 0)
  step = 0
  while True:
    rows = transform.samples(step)
    packed = [loader.pack_example(sample, raw.image_id, raw.orig_hw, options.max_instances,
                                  options.proto_hw, options.segm_hw, name=name)
              for raw, sample, name in rows]
    yield StudyBatch(ours={k: np.stack([p[k] for p in packed]) for k in BATCH_KEYS},
                     images=np.stack([sample.image for _, sample, _ in rows]),
                     samples=[sample for _, sample, _ in rows])
    step += 1


# ------------------------------------------------------------------------------- both sides

class OurRun:
  """Our jitted train step from ``variables``."""

  def __init__(self, training: Any, variables: dict, seed: int):
    import jax
    self.training = training
    self.state = training.init_state(variables, seed=seed)
    self._get = jax.device_get

  def step(self, batch: StudyBatch) -> dict[str, float]:
    self.state, metrics = self.training.step(self.state, batch.ours)
    metrics = self._get(metrics)
    losses = {k: float(metrics[k]) for k in LOSS_TERMS if k in metrics}
    return {**losses, 'total': float(metrics['loss']), 'lr': float(metrics['lr']),
            'finite': bool(metrics['finite'])}

  def state_dict(self) -> dict[str, np.ndarray]:
    from yolact_jax.checkpoint.convert import variables_to_state_dict
    return variables_to_state_dict(self._get({'params': self.state.params,
                                              'batch_stats': self.state.batch_stats}))


class OriginalRun:
  """The original's network in training mode and its ``train.py`` iteration: the learning rate
  set as train.py sets it (linear warmup from ``lr_warmup_init``, then x gamma at each step),
  ``MultiBoxLoss``, backward, the optimiser step when the loss is finite. The optimiser is the
  preset's: the original's momentum SGD, or Adam for the presets that use it (coupled weight
  decay on both)."""

  def __init__(self, original: Any, torch: Any, cfg: Any, variables: dict, device: Any,
               seed: int, input_noise: float = 0.0):
    from yolact_jax.compare.weights import to_torch_state_dict
    self.torch, self.device, self.noise = torch, device, input_noise
    self.schedule = original.config_module.cfg
    original_cfg = original.config_module.cfg
    torch.manual_seed(seed)  # the masks_to_train subsets, when an image has that many positives
    self.net = original.Yolact()
    self.net.load_state_dict(to_torch_state_dict(variables, torch), strict=True)
    self.net.train()  # applies cfg.freeze_bn
    self.net.to(device)
    multibox = importlib.import_module('layers.modules.multibox_loss')
    self.criterion = loss_criterion_call(multibox.MultiBoxLoss(
        num_classes=original_cfg.num_classes,
        pos_threshold=original_cfg.positive_iou_threshold,
        neg_threshold=original_cfg.negative_iou_threshold,
        negpos_ratio=original_cfg.ohem_negpos_ratio))
    params = self.net.parameters()
    if cfg.train.optimizer == 'adam':
      self.optimizer = torch.optim.Adam(params, lr=original_cfg.lr,
                                        weight_decay=original_cfg.decay)
    else:
      self.optimizer = torch.optim.SGD(params, lr=original_cfg.lr,
                                       momentum=original_cfg.momentum,
                                       weight_decay=original_cfg.decay)
    self.rng = np.random.default_rng(seed + 1)
    self.iteration, self.step_index = 0, 0

  def _set_lr(self, lr: float) -> None:
    for group in self.optimizer.param_groups:
      group['lr'] = lr

  def learning_rate(self) -> float:
    return float(self.optimizer.param_groups[0]['lr'])

  def step(self, batch: StudyBatch) -> dict[str, float]:
    c, it = self.schedule, self.iteration
    if c.lr_warmup_until > 0 and it <= c.lr_warmup_until:
      self._set_lr((c.lr - c.lr_warmup_init) * (it / c.lr_warmup_until) + c.lr_warmup_init)
    while self.step_index < len(c.lr_steps) and it >= c.lr_steps[self.step_index]:
      self.step_index += 1
      self._set_lr(c.lr * (c.gamma ** self.step_index))
    lr = self.learning_rate()
    images = batch.images
    if self.noise:
      images = (images * (1 + self.rng.uniform(-self.noise, self.noise, images.shape))
                ).astype(np.float32)
    gts, masks, crowds = original_targets(batch.samples, self.torch, self.device)
    self.optimizer.zero_grad()
    losses = self.criterion(self.net, self.net(nchw_tensor(images, self.torch, self.device)),
                            gts, masks, crowds)
    loss = sum(v.mean() for v in losses.values())
    loss.backward()
    finite = bool(self.torch.isfinite(loss).item())
    if finite:  # train.py skips the step otherwise
      self.optimizer.step()
    self.iteration += 1
    return {**{k: float(v.detach().mean()) for k, v in losses.items()},
            'total': float(loss.detach()), 'lr': lr, 'finite': finite}

  def state_dict(self) -> dict[str, np.ndarray]:
    return {k: tensor_to_numpy(v) for k, v in self.net.state_dict().items()}


def configure_original(original: Any, torch: Any, cfg: Any, freeze_bn: bool) -> None:
  """The original's global config set to ``cfg``'s translation (:mod:`.original_config`)."""
  from yolact_jax.compare.original_config import original_config
  from yolact_jax.train_step import effective_schedule
  backbone_module = importlib.import_module('backbone')
  original.config_module.cfg.replace(original_config(
      original.config_module, backbone_module, torch, cfg, effective_schedule(cfg), freeze_bn))


# ------------------------------------------------------------------------------- drift

def group_of(key: str) -> str:
  """The tensor group of a state_dict key (its first component; BatchNorm running statistics
  are their own group, ``bn_stats``)."""
  if key.rsplit('.', 1)[-1] in BN_STATS:
    return 'bn_stats'
  return key.split('.', 1)[0]


def group_norms(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
  """Per tensor group, ||a - b|| over every float tensor of the group (float64)."""
  sums: dict[str, float] = {}
  for key, value in a.items():
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
      continue
    diff = value.astype(np.float64) - np.asarray(b[key], np.float64)
    sums[group_of(key)] = sums.get(group_of(key), 0.0) + float(np.sum(diff * diff))
  return {g: float(np.sqrt(v)) for g, v in sums.items()}


def relative_drift(x: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                   start: dict[str, np.ndarray]) -> dict[str, float | None]:
  """Per group ||x - reference|| / ||reference - start||: how far ``x`` is from the reference
  run, in units of how far the reference moved (None where it did not move: frozen)."""
  apart, moved = group_norms(x, reference), group_norms(reference, start)
  return {g: (apart[g] / moved[g] if moved[g] > 0 else None) for g in moved}


# ------------------------------------------------------------------------------- the studies

def run_steps(cfg: Any, variables: dict, source: Any, original: Any, torch: Any, device: Any,
              *, steps: int, seed: int, record_every: int = 1,
              progress: bool = True) -> dict[str, Any]:
  """``steps`` steps of ours, the original and the original on a perturbed input, in lockstep on
  the same batches; per recorded step the loss terms of the three and the relative drifts
  (ours and the perturbed original, each from the original)."""
  from tqdm import tqdm
  from yolact_jax import train_step as ts
  training = ts.build_training(cfg)
  configure_original(original, torch, cfg, training.freeze_bn)
  start = OurRun(training, variables, cfg.train.seed).state_dict()
  ours = OurRun(training, variables, cfg.train.seed)
  theirs = OriginalRun(original, torch, cfg, variables, device, cfg.train.seed)
  perturbed = OriginalRun(original, torch, cfg, variables, device, cfg.train.seed,
                          input_noise=INPUT_NOISE_RELATIVE)
  records = []
  batches = study_batches(cfg, source, cfg.train.seed)
  for step in tqdm(range(1, steps + 1), desc='train steps', disable=not progress,
                   unit='step'):
    batch = next(batches)
    row = {'step': step, 'ours': ours.step(batch), 'original': theirs.step(batch),
           'original_perturbed': perturbed.step(batch),
           'num_positives': int(np.sum(batch.ours['valid']))}
    if step % record_every == 0 or step in (1, steps):
      reference = theirs.state_dict()
      row['drift'] = {'ours': relative_drift(ours.state_dict(), reference, start),
                      'original_perturbed': relative_drift(perturbed.state_dict(), reference,
                                                           start)}
    records.append(row)
  return {'freeze_bn': training.freeze_bn, 'batch_size': cfg.train.batch_size,
          'steps': records}


def run_training(cfg: Any, variables: dict, source: Any, run: Any, seed: int, *,
                 iterations: int, progress: bool = True, label: str = '') -> list[dict]:
  """``iterations`` steps of ``run`` (an :class:`OurRun` or :class:`OriginalRun`) on the stream
  of data seed ``seed``; the loss terms of every step."""
  from tqdm import tqdm
  del variables
  batches = study_batches(cfg, source, seed)
  return [{'step': step, **run.step(next(batches))}
          for step in tqdm(range(1, iterations + 1), desc=label or 'training', unit='step',
                           disable=not progress)]


def evaluate_state_dict(cfg: Any, state_dict: dict[str, np.ndarray], val_set: Any
                        ) -> dict[str, float]:
  """Box and mask mAP of a state_dict (either side's) by our COCO evaluator: the original's
  weights run through our inference program, which computes its function (docs/parity.md)."""
  from yolact_jax import evaluation
  from yolact_jax.checkpoint.convert import state_dict_to_variables
  summary = evaluation.evaluate_model(cfg, state_dict_to_variables(state_dict, cfg), val_set,
                                      batch_size=8)
  return {'box_map': float(summary['box_map']), 'mask_map': float(summary['mask_map']),
          'mask_ap50': float(summary['segm']['AP50'])}


def run_whole(cfg: Any, variables: dict, source: Any, val_set: Any, original: Any, torch: Any,
              device: Any, *, data_seeds: Sequence[int], progress: bool = True
              ) -> dict[str, Any]:
  """Whole runs of ``cfg.train.max_iter`` steps from ``variables``, ours and the original on the
  stream of each data seed (the same batches for both sides of a seed); every model scored by
  our COCO evaluator on ``val_set``."""
  from yolact_jax import train_step as ts
  training = ts.build_training(cfg)
  configure_original(original, torch, cfg, training.freeze_bn)
  iterations = training.schedule.max_iter
  runs = []
  for seed in data_seeds:
    for side in ('ours', 'original'):
      run = (OurRun(training, variables, cfg.train.seed) if side == 'ours' else
             OriginalRun(original, torch, cfg, variables, device, cfg.train.seed))
      losses = run_training(cfg, variables, source, run, seed, iterations=iterations,
                            progress=progress, label=f'{side}, data seed {seed}')
      runs.append({'side': side, 'data_seed': seed, 'losses': losses,
                   **evaluate_state_dict(cfg, run.state_dict(), val_set)})
  return {'iterations': iterations, 'freeze_bn': training.freeze_bn,
          'batch_size': cfg.train.batch_size, 'runs': runs, 'verdict': whole_run_verdict(runs)}


def whole_run_verdict(runs: Sequence[dict]) -> dict[str, Any]:
  """Per metric: the mean of our runs against the original's seed-to-seed spread (its runs'
  min..max; ``inside``), and the difference of the two means in standard errors (Welch's t, from
  each side's seed-to-seed standard deviation; ``consistent`` where |t| <= 2). With three seeds a
  side the range is a rough yardstick: a fourth draw of the same distribution falls outside the
  range of three half the time, so the t value says how far apart the sides really are."""
  out = {}
  for metric in ('box_map', 'mask_map', 'mask_ap50'):
    sides = {side: np.array([r[metric] for r in runs if r['side'] == side], np.float64)
             for side in ('ours', 'original')}
    entry: dict[str, Any] = {}
    for side, values in sides.items():
      entry.update({f'{side}_mean': float(values.mean()), f'{side}_min': float(values.min()),
                    f'{side}_max': float(values.max())})
    entry['original_spread'] = entry['original_max'] - entry['original_min']
    entry['inside'] = entry['original_min'] <= entry['ours_mean'] <= entry['original_max']
    if min(len(v) for v in sides.values()) > 1:
      error = float(np.sqrt(sum(v.var(ddof=1) / len(v) for v in sides.values())))
      difference = entry['ours_mean'] - entry['original_mean']
      entry['t'] = difference / error if error > 0 else (0.0 if difference == 0 else np.inf)
      entry['consistent'] = bool(abs(entry['t']) <= 2)
    out[metric] = entry
  return out
