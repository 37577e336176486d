"""grain loaders producing fixed-shape training batches (numpy dicts, layout: :func:`pack_example`).

Sources are anything with ``len()`` and ``[i] -> record`` (see ``coco.build_records``):
``InMemoryRecordSource`` over a ``CocoDataset`` (records in memory, images read from disk) and
``TfdsRecordSource`` over a prepared TFDS split (``tfds_builder``, images in array_record files).

Determinism and topology: the stream is a function of (seed, source, options) and nothing else.
Global position ``j`` (the ``j``-th record drawn since the run began) is record
``permutation(epoch)[j % n]`` with its own ``np.random.Generator``, both from ``(seed, j)``; global
batch ``k`` is positions ``k*B .. k*B + B - 1``, and a process loads only its ``rows`` of it. So
the batches are the same whatever the number of devices, processes or grain workers, and the data
position is one integer (:class:`DataPosition`) that a run resumes from on any topology. Every
draw, substitutes included (:func:`make_train_sample`), is from the position's generator.
Pitfall: crowds and padding rows both have label -1 (``valid`` marks the real rows).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, Sequence

import cv2
import grain.python as grain
import numpy as np

from yolact_jax.config import AugmentConfig
from yolact_jax.data import augment
from yolact_jax.data import coco as coco_lib
from yolact_jax.data import masks as mask_lib
from yolact_jax.data import mmdet_augment

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ sources

class LabelError(ValueError):
  """A sample whose class index is outside the config's classes (it would poison the loss)."""


class InMemoryRecordSource:
  """Records held in memory (e.g. ``CocoDataset.records``); ``[i]`` -> record.

  ``class_names``: the classes the records' ``category_index`` refers to (None: unknown), checked
  against the config before training (``yolact_jax.data.categories``).
  """

  def __init__(self, records: Sequence[dict], name: str = 'records',
               class_names: Sequence[str] | None = None):
    self._records = list(records)
    self._name = name
    self.class_names = tuple(class_names) if class_names is not None else None

  @classmethod
  def from_coco(cls, dataset: coco_lib.CocoDataset) -> 'InMemoryRecordSource':
    return cls(dataset.records, name=f'{dataset.ann_file}:{dataset.keep}',
               class_names=dataset.class_names)

  @property
  def name(self) -> str:
    """Where the records come from (annotation file and selection)."""
    return self._name

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    return self._records[int(index)]

  def __repr__(self) -> str:
    return f'InMemoryRecordSource({self._name!r}, n={len(self)})'


def _tfds_builder():
  """``yolact_jax.data.tfds_builder``, imported on the TFDS path only (tensorflow-datasets is the
  ``[tfds]`` extra)."""
  try:
    from yolact_jax.data import tfds_builder
  except ModuleNotFoundError as e:
    if e.name and e.name.split('.')[0] in ('tensorflow_datasets', 'array_record'):
      raise ImportError(f"a TFDS dataset needs {e.name}: pip install 'yolact-jax[tfds]'") from e
    raise
  return tfds_builder


class TfdsRecordSource:
  """A prepared TFDS split (``tfds_builder``) seen as records, images selected like
  ``CocoDataset``'s ``keep`` (from the metadata, without reading the records)."""

  def __init__(self, data_source: Any, metadata: dict, split: str,
               keep: str = 'with_objects', name: str = ''):
    if keep not in coco_lib.KEEP_CHOICES:
      raise ValueError(f'keep must be one of {coco_lib.KEEP_CHOICES}, got {keep!r}')
    num_objects = np.asarray(metadata[f'{split}/num_objects'], np.int64)
    num_crowds = np.asarray(metadata[f'{split}/num_crowds'], np.int64)
    if len(num_objects) != len(data_source):
      raise ValueError(f'metadata lists {len(num_objects)} records for {split!r} but the '
                       f'source has {len(data_source)}')
    if keep == 'with_objects':
      selected = num_objects > 0
    elif keep == 'with_annotations':
      selected = (num_objects + num_crowds) > 0
    else:
      selected = np.ones(len(num_objects), bool)
    self._source = data_source
    self._indices = np.flatnonzero(selected)
    if len(self._indices) == 0:
      raise coco_lib.CocoFormatError(f'{name or split}: empty dataset (keep={keep!r})')
    self.label_map = _tfds_builder().label_map_from_metadata(metadata)
    self.class_names = self.label_map.class_names
    self._name = f'{name}:{split}:{keep}'

  @property
  def name(self) -> str:
    """Where the records come from (dataset directory, split and selection)."""
    return self._name

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict:
    return _tfds_builder().example_to_record(self._source[int(self._indices[int(index)])])

  def __repr__(self) -> str:
    return f'TfdsRecordSource({self._name!r}, n={len(self)})'


def open_tfds_source(builder_dir: str, split: str, keep: str = 'with_objects'
                     ) -> TfdsRecordSource:
  """``TfdsRecordSource`` of a prepared dataset directory (…/coco_format_instances/<cfg>/1.0.0)."""
  data_source, metadata = _tfds_builder().load_tfds_split(builder_dir, split)
  return TfdsRecordSource(data_source, metadata, split, keep=keep, name=str(builder_dir))


# --------------------------------------------------------------------------- packing to G rows

def select_rows(labels: np.ndarray, max_instances: int) -> np.ndarray:
  """Indices of the rows kept in G = ``max_instances`` slots.

  ``labels`` lists non-crowd rows (>= 0) first, then crowds (-1). All rows if they fit; else the
  first G objects, then crowds in the slots left (the original's loss sees at most
  ``masks_to_train`` positives anyway).
  """
  objects = np.flatnonzero(labels >= 0)[:max_instances]
  crowds = np.flatnonzero(labels < 0)[:max_instances - len(objects)]
  return np.concatenate([objects, crowds]).astype(np.int64)


def pack_example(sample: augment.TransformedSample, image_id: int, orig_hw: tuple[int, int],
                 max_instances: int, proto_hw: tuple[int, int] | None,
                 segm_hw: tuple[int, int] | None, name: str = '') -> dict:
  """One transformed sample -> fixed-shape arrays: one row of a training batch, which stacks
  them (B = batch size, G = max_instances, S = max_size)::

    image        float32 [B, S, S, 3]  normalised, NHWC, RGB
    boxes        float32 [B, G, 4]     relative x1y1x2y2 (0 in padding)
    labels       int32   [B, G]        0-based class; -1 for crowds AND for padding
    is_crowd     bool    [B, G]
    valid        bool    [B, G]        real rows (objects and crowds); padding False
    masks_proto  uint8   [B, G, Hp, Wp]  GT masks downsampled as the loss does (138 x 138 at 550)
    masks_segm   uint8   [B, G, Hs, Ws]  same at the semantic-seg size (69 x 69 at 550)
    num_crowds   int32   [B]
    image_id     int64   [B]
    orig_hw      int32   [B, 2]        original (H, W)

  Rows are the non-crowd objects first, then the crowds, then padding; when an image has more
  than G rows the objects win (:func:`select_rows`; a warning names the image). Masks are
  downsampled to ``proto_hw`` / ``segm_hw`` as the loss does
  (``masks.downsample_binarize_masks``); None leaves that field out.
  """
  rows = select_rows(sample.labels, max_instances)
  if len(rows) < len(sample.labels):
    log.warning('%s (image %d): %d objects + %d crowds exceed max_instances=%d: kept %d',
                name, image_id, int((sample.labels >= 0).sum()), sample.num_crowds,
                max_instances, len(rows))
  n = len(rows)
  labels = sample.labels[rows]
  example = {
      'image': sample.image,
      'boxes': np.zeros((max_instances, 4), np.float32),
      'labels': np.full((max_instances,), -1, np.int32),
      'is_crowd': np.zeros((max_instances,), bool),
      'valid': np.zeros((max_instances,), bool),
      'num_crowds': np.int32((labels < 0).sum()),
      'image_id': np.int64(image_id),
      'orig_hw': np.asarray(orig_hw, np.int32),
  }
  example['boxes'][:n] = sample.boxes[rows]
  example['labels'][:n] = labels
  example['is_crowd'][:n] = labels < 0
  example['valid'][:n] = True
  for key, hw in (('masks_proto', proto_hw), ('masks_segm', segm_hw)):
    if hw is None:
      continue
    packed = np.zeros((max_instances, *hw), np.uint8)
    if n:
      packed[:n] = mask_lib.downsample_binarize_masks(sample.masks[rows], hw)
    example[key] = packed
  return example


# ------------------------------------------------------------------------------ transforms

@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """Everything the per-sample transforms need (take these from the model config).

  max_size: network input side S.
  transform_kind: 'resnet' (BGR mean/std, RGB) or 'darknet' (x/255, RGB).
  flags: training augmentation switches (the config's ``augment`` section).
  max_instances: G, rows per image.
  proto_hw / segm_hw: mask sizes shipped (138/69 at 550: the proto and P3 sizes).
  max_substitutions: how many substitutes to try before giving up (an error).
  cv2_threads: cv2.setNumThreads in the process doing the work (1 = one core per worker).
  num_classes: foreground classes of the model; a label >= this is a ``LabelError`` naming the
    image (None: not checked).
  """
  max_size: int = 550
  transform_kind: str = 'resnet'
  flags: AugmentConfig = AugmentConfig()
  max_instances: int = 100
  proto_hw: tuple[int, int] = (138, 138)
  segm_hw: tuple[int, int] = (69, 69)
  max_substitutions: int = 50
  cv2_threads: int | None = 1
  num_classes: int | None = None


def _set_cv2_threads(threads: int | None) -> None:
  if threads is not None and cv2.getNumThreads() != threads:
    cv2.setNumThreads(threads)


def _check_labels(raw: coco_lib.RawSample, name: str, num_classes: int | None) -> None:
  if num_classes is not None and raw.labels.size and int(raw.labels.max()) >= num_classes:
    raise LabelError(f'{name} (image {raw.image_id}): class index {int(raw.labels.max())} but '
                     f'the config has {num_classes} classes (indices 0..{num_classes - 1}); '
                     "the dataset's categories do not match config dataset.class_names")


def make_train_sample(source: Any, index: int, rng: np.random.Generator,
                      options: PipelineOptions) -> tuple[coco_lib.RawSample,
                                                         augment.TransformedSample, str]:
  """Reads and augments the sample at ``index``: ``(raw sample, transformed sample at the
  network input size with full-size masks, its name)``.

  A broken sample (unreadable image) or one the augmentation leaves without any object is
  replaced by another index drawn from ``rng`` (the original resamples a random index), with a
  warning."""
  for _ in range(options.max_substitutions + 1):
    record = source[index]
    name = record.get('image_path') or record.get('file_name', '?')
    try:
      raw = coco_lib.decode_record(record)
    except coco_lib.BrokenSampleError as e:
      log.warning('skipping broken sample %s: %s', e.file_name, e.reason)
      index = int(rng.integers(len(source)))
      continue
    _check_labels(raw, name, options.num_classes)
    if options.flags.pipeline == 'mmdet':  # None: its box filter left nothing
      sample = mmdet_augment.train_transform(
          raw.image, raw.masks, raw.boxes, raw.labels, raw.num_crowds, mmdet_augment.Draws(rng),
          max_size=options.max_size, kind=options.transform_kind, flags=options.flags)
    else:
      sample = augment.train_transform(
          raw.image, raw.masks, raw.boxes, raw.labels, raw.num_crowds, rng,
          max_size=options.max_size, kind=options.transform_kind, flags=options.flags)
    if sample is None or not (sample.labels >= 0).any():
      log.warning('%s: no object left after augmentation: resampling', name)
      index = int(rng.integers(len(source)))
      continue
    return raw, sample, name
  raise RuntimeError(f'{options.max_substitutions} substitutes in a row were broken or empty '
                     f'(last: {name}); is the dataset readable?')


def make_train_example(source: Any, index: int, rng: np.random.Generator,
                       options: PipelineOptions) -> dict:
  """:func:`make_train_sample`, packed into fixed-shape arrays (:func:`pack_example`)."""
  raw, sample, name = make_train_sample(source, index, rng, options)
  return pack_example(sample, raw.image_id, raw.orig_hw, options.max_instances,
                      options.proto_hw, options.segm_hw, name=name)


def epoch_permutation(seed: int, epoch: int, num_records: int) -> np.ndarray:
  """The record order of one epoch (every epoch its own shuffle of all records)."""
  return np.random.default_rng([seed, 0, epoch]).permutation(num_records)


def position_rng(seed: int, position: int) -> np.random.Generator:
  """The generator of global position ``position``: augmentation and substitutes draw from it."""
  return np.random.default_rng([seed, 1, position])


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where a run is in its data stream: ``position`` records drawn since step 0 (over all
  processes), and what the stream is a function of (checked on resume)."""
  position: int
  seed: int
  num_records: int

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict) -> 'DataPosition':
    return cls(int(data['position']), int(data['seed']), int(data['num_records']))


class _BatchIndices:
  """What grain samples: local batch ``i`` (the record source lives in the transform, so workers
  receive it once and substitutes can be read)."""

  def __init__(self, length: int):
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> int:
    return int(index)

  def __repr__(self) -> str:
    return f'_BatchIndices({self._length})'


class TrainBatchTransform(grain.MapTransform):
  """grain transform: local batch index ``i`` -> this process's rows of global batch
  ``start/B + i``, each example made from its global position's record and generator."""

  def __init__(self, source: Any, options: PipelineOptions, seed: int, batch_size: int,
               rows: tuple[int, int], start: int):
    self.source, self.options, self.seed = source, options, seed
    self.batch_size, self.rows, self.start = batch_size, rows, start
    self._permutations: dict[int, np.ndarray] = {}

  def _record_index(self, position: int) -> int:
    epoch, offset = divmod(position, len(self.source))
    if epoch not in self._permutations:
      if len(self._permutations) > 1:  # a batch spans at most two epochs
        self._permutations.pop(min(self._permutations))
      self._permutations[epoch] = epoch_permutation(self.seed, epoch, len(self.source))
    return int(self._permutations[epoch][offset])

  def samples(self, element: int) -> list[tuple[coco_lib.RawSample, augment.TransformedSample,
                                                  str]]:
    """The rows of local batch ``element`` before packing (:func:`make_train_sample`)."""
    _set_cv2_threads(self.options.cv2_threads)
    first = self.start + int(element) * self.batch_size
    return [make_train_sample(self.source, self._record_index(position),
                              position_rng(self.seed, position), self.options)
            for position in range(first + self.rows[0], first + self.rows[1])]

  def map(self, element: int) -> dict:
    o = self.options
    examples = [pack_example(sample, raw.image_id, raw.orig_hw, o.max_instances, o.proto_hw,
                             o.segm_hw, name=name) for raw, sample, name in self.samples(element)]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def _mark_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; a program that did not parse them (pytest, a
  notebook, a plain script) would fail there."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_train_loader(source: Any, batch_size: int, seed: int,
                      options: PipelineOptions = PipelineOptions(), worker_count: int = 0,
                      worker_buffer_size: int = 2, rows: tuple[int, int] | None = None,
                      start: int = 0, num_epochs: int | None = None) -> grain.DataLoader:
  """Shuffled, augmented, fixed-shape training batches (see the module docstring).

  Args:
    source: record source (``InMemoryRecordSource``, ``TfdsRecordSource``).
    batch_size: the global batch size B (over every process; incomplete batches are dropped).
    seed: shuffling and augmentation seed (non-negative, < 2**32).
    options: transform options.
    worker_count: grain worker processes (0 = in this process). Scripts using workers must
      guard their entry point with ``if __name__ == '__main__':`` (spawned processes).
    worker_buffer_size: batches each worker prepares ahead.
    rows: ``(first, stop)``: the rows of every global batch this process loads (its devices'
      share, ``parallel.local_batch_rows``); default all B.
    start: global positions already consumed (``DataPosition.position`` of a resumed run).
    num_epochs: None = repeat forever; else stop after ``num_epochs * len(source)`` positions.
  Returns:
    a ``grain.DataLoader`` whose iterator yields batches of ``stop - first`` rows.
  """
  if options.transform_kind not in augment.TRANSFORM_KINDS:
    raise ValueError(f'transform_kind must be one of {augment.TRANSFORM_KINDS}')
  rows = (0, batch_size) if rows is None else (int(rows[0]), int(rows[1]))
  if not 0 <= rows[0] < rows[1] <= batch_size:
    raise ValueError(f'rows {rows} are not a slice of a batch of {batch_size}')
  if len(source) == 0:
    raise ValueError(f'{source!r} is empty: nothing to train on')
  if worker_count:
    _mark_absl_flags_parsed()
  num_batches = (sys.maxsize if num_epochs is None
                 else max(num_epochs * len(source) - start, 0) // batch_size)
  return grain.DataLoader(
      data_source=_BatchIndices(num_batches),
      sampler=grain.SequentialSampler(num_records=num_batches),
      operations=[TrainBatchTransform(source, options, seed, batch_size, rows, start)],
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
