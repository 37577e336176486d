"""TFDS dataset (array_record, no TensorFlow needed) built from a COCO-format manual directory.

Manual directory layout (COCO 2017, the synthetic dataset and most custom datasets)::

  <manual_dir>/annotations/instances_<tag>.json
  <manual_dir>/<tag>/<file_name>            images

``split_tags`` maps TFDS split names to tags; the builder configs give the usual ones
('synthetic' / 'custom': train, val; 'coco2017': train2017, val2017; 'coco2014': train2014,
val2014 -- 'validation' is the TFDS name of the val split). Each example is one image (ALL
images, in annotation-file order, which is the record index: shuffling at build time is
disabled), its file bytes and annotations (:func:`record_to_example`). Defects follow
``coco.build_records``' policy; images cv2 cannot decode, or whose size differs from the JSON,
are left out too. Read back with :func:`load_tfds_split` or ``tfds.data_source(...)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from yolact_jax.data import coco as coco_lib
from yolact_jax.data import masks as mask_lib

log = logging.getLogger(__name__)

_DEFAULT_SPLIT_TAGS = {'train': 'train', 'validation': 'val'}
CONFIG_SPLIT_TAGS = {
    'synthetic': _DEFAULT_SPLIT_TAGS,
    'custom': _DEFAULT_SPLIT_TAGS,
    'coco2017': {'train': 'train2017', 'validation': 'val2017'},
    'coco2014': {'train': 'train2014', 'validation': 'val2014'},
}


class CocoFormatInstances(tfds.core.GeneratorBasedBuilder):
  """Any COCO-format instance-segmentation dataset (see the module docstring).

  ``info.metadata`` holds the label map (category ids and names), per split the ``image_ids``,
  ``num_objects`` and ``num_crowds`` of every record (so a reader can select images without
  reading them) and every ``problems`` line found while building. Read back with
  ``tfds.data_source('coco_format_instances/<config>', data_dir=...)``.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f'splits {tags}')
                     for name, tags in CONFIG_SPLIT_TAGS.items()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put a COCO-format dataset in the manual directory: annotations/instances_<tag>.json and '
      'the images in <tag>/ for each split tag (train/val, or train2017/val2017 for COCO).')

  def __init__(self, *, split_tags: dict[str, str] | None = None, verify_images: bool = True,
               **kwargs):
    """
    Args:
      split_tags: TFDS split name -> file tag; default from the config.
      verify_images: decode every image while building (reports corrupt files).
      **kwargs: for ``tfds.core.GeneratorBasedBuilder`` (config, data_dir, file_format...).
    """
    self._split_tags_override = split_tags
    self._verify_images = verify_images
    self.problems: list[coco_lib.Problem] = []
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  @property
  def split_tags(self) -> dict[str, str]:
    if self._split_tags_override is not None:
      return dict(self._split_tags_override)
    return dict(CONFIG_SPLIT_TAGS.get(self.builder_config.name, _DEFAULT_SPLIT_TAGS))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='COCO-format instance segmentation (images, boxes, labels, crowd flags, '
                    'RLE masks).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(), dtype=np.object_),
            'image_id': tfds.features.Scalar(np.int64),
            'file_name': tfds.features.Text(),
            'height': tfds.features.Scalar(np.int32),
            'width': tfds.features.Scalar(np.int32),
            'objects': tfds.features.Sequence({
                'bbox_xywh': tfds.features.Tensor(shape=(4,), dtype=np.float64),
                'category_id': tfds.features.Scalar(np.int64),
                'category_index': tfds.features.Scalar(np.int32),
                'is_crowd': tfds.features.Scalar(np.bool_),
                'annotation_id': tfds.features.Scalar(np.int64),
                'mask_rle': tfds.features.Tensor(shape=(), dtype=np.object_),
            }),
        }),
        disable_shuffling=True,  # record index = annotation-file order
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    generators, label_map = {}, None
    for split, tag in self.split_tags.items():
      ann_file = os.path.join(manual_dir, 'annotations', f'instances_{tag}.json')
      if not os.path.isfile(ann_file):
        log.warning('no %s: split %r skipped', ann_file, split)
        continue
      data = coco_lib.load_annotation_file(ann_file)
      split_map = coco_lib.build_label_map(data['categories']) if data['categories'] else None
      if label_map is None:
        label_map = split_map
      elif split_map is not None and split_map != label_map:
        raise coco_lib.CocoFormatError(
            f'{ann_file}: categories differ from the other splits\' ({label_map})')
      records, problems, _ = coco_lib.build_records(
          data, ann_file, os.path.join(manual_dir, tag), label_map=label_map, keep='all')
      self.problems.extend(problems)
      generators[split] = self._generate_examples(split, records, label_map, ann_file)
    if not generators:
      raise coco_lib.CocoFormatError(
          f'{manual_dir}: no annotation file found (looked for annotations/instances_<tag>'
          f'.json with tags {sorted(self.split_tags.values())})')
    self.info.metadata['category_ids'] = list(label_map.category_ids)
    self.info.metadata['class_names'] = list(label_map.class_names)
    return generators

  def _generate_examples(self, split: str, records: Sequence[dict],
                         label_map: coco_lib.LabelMap, ann_file: str):
    image_ids, num_objects, num_crowds = [], [], []
    for record in records:
      example, problem = record_to_example(record, label_map, self._verify_images)
      if problem is not None:
        self.problems.append(dataclasses.replace(problem, source=ann_file))
        continue
      image_ids.append(int(record['image_id']))
      num_crowds.append(int(np.sum(record['is_crowd'])))
      num_objects.append(len(record['is_crowd']) - num_crowds[-1])
      yield len(image_ids) - 1, example
    self.info.metadata[f'{split}/image_ids'] = image_ids
    self.info.metadata[f'{split}/num_objects'] = num_objects
    self.info.metadata[f'{split}/num_crowds'] = num_crowds
    self.info.metadata['problems'] = [str(p) for p in self.problems]


def record_to_example(record: dict, label_map: coco_lib.LabelMap, verify_image: bool = True,
                      ) -> tuple[dict | None, coco_lib.Problem | None]:
  """A reader record -> TFDS example dict, or (None, problem) when the image is unusable
  (unreadable; with ``verify_image`` also undecodable by cv2, or of another size than the JSON's).

  The example::

    image         the encoded file bytes as on disk (decoded later with cv2, like cv2.imread)
    image_id      int64;  file_name  text;  height, width  int32 (original size)
    objects       per annotation: bbox_xywh float64 [4] (pixels, clipped as the reader does),
                  category_id int64, category_index int32 (0-based), is_crowd bool,
                  annotation_id int64, mask_rle bytes (compressed COCO RLE of the full-size mask)
  """
  path = record['image_path']
  try:
    with open(path, 'rb') as f:
      encoded = f.read()
  except OSError as e:
    return None, coco_lib.Problem(path, f'cannot read image ({e.strerror}): image left out',
                                  record['image_id'], kind='unreadable image')
  height, width = int(record['height']), int(record['width'])
  if verify_image:
    try:
      image = coco_lib.decode_image(encoded, None, path)
    except coco_lib.BrokenSampleError as e:
      return None, coco_lib.Problem(path, f'{e.reason}: image left out', record['image_id'],
                                    kind='unreadable image')
    if image.shape[:2] != (height, width):
      return None, coco_lib.Problem(
          path, f'image is {image.shape[1]}x{image.shape[0]} but the annotations say '
          f'{width}x{height}: image left out', record['image_id'], kind='unreadable image')
  rles = []
  for segmentation, box in zip(record['segmentations'], record['boxes_xywh']):
    try:
      if segmentation is None:
        raise mask_lib.SegmentationError('no segmentation')
      rle = mask_lib.segmentation_to_rle(segmentation, height, width)
    except mask_lib.SegmentationError:
      rle = mask_lib.encode_masks(mask_lib.box_mask(box, height, width)[None])[0]
    rles.append(bytes(rle['counts']))
  category_ids = [label_map.category_ids[i] for i in record['category_index']]
  example = {
      'image': encoded,
      'image_id': int(record['image_id']),
      'file_name': record['file_name'],
      'height': height,
      'width': width,
      'objects': {
          'bbox_xywh': np.asarray(record['boxes_xywh'], np.float64).reshape(-1, 4),
          'category_id': np.asarray(category_ids, np.int64),
          'category_index': np.asarray(record['category_index'], np.int32),
          'is_crowd': np.asarray(record['is_crowd'], bool),
          'annotation_id': np.asarray(record['annotation_ids'], np.int64),
          'mask_rle': rles,
      },
  }
  return example, None


def _as_str(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, (bytes, np.bytes_)) else str(value)


def example_to_record(example: dict) -> dict:
  """A TFDS example (as ``tfds.data_source`` returns it) -> reader record (``coco.decode_record``
  input). Handles the forms zero-instance examples come back in (empty lists or an empty dict).
  """
  objects = example.get('objects') or {}
  height, width = int(example['height']), int(example['width'])

  def column(key, dtype, shape=(-1,)):
    values = objects.get(key, [])
    return np.asarray(list(values), dtype).reshape(shape)

  rles = [bytes(c) for c in objects.get('mask_rle', [])]
  return {
      'image_id': int(example['image_id']),
      'file_name': _as_str(example['file_name']),
      'height': height,
      'width': width,
      'image_bytes': bytes(example['image']),
      'boxes_xywh': column('bbox_xywh', np.float64, (-1, 4)),
      'category_index': column('category_index', np.int32),
      'is_crowd': column('is_crowd', bool),
      'annotation_ids': column('annotation_id', np.int64),
      'segmentations': [{'size': [height, width], 'counts': c} for c in rles],
  }


def build_tfds_dataset(manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                       config: str = 'custom', split_tags: dict[str, str] | None = None,
                       verify_images: bool = True) -> tuple[str, list[coco_lib.Problem]]:
  """Builds the TFDS dataset (skipped by TFDS if it already exists).

  Args:
    manual_dir: the COCO-format folder.
    data_dir: TFDS data dir to write into.
    config: builder config ('synthetic', 'custom', 'coco2017', 'coco2014').
    split_tags: override of the config's split name -> file tag map.
    verify_images: decode each image to find corrupt files.
  Returns:
    (builder directory, problems found in this build -- empty if it already existed)
  Raises:
    CocoFormatError: non-COCO annotation file, no annotation file, or an empty dataset.
  """
  builder = CocoFormatInstances(config=config, data_dir=os.fspath(data_dir),
                                split_tags=split_tags, verify_images=verify_images)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir)))
  coco_lib.log_problems(builder.problems)
  return os.fspath(builder.data_path), list(builder.problems)


def load_tfds_split(builder_dir: str | os.PathLike, split: str) -> tuple[Any, dict]:
  """(``tfds`` random-access data source, metadata dict) of a prepared split directory."""
  builder = tfds.builder_from_directory(os.fspath(builder_dir))
  return builder.as_data_source(split), dict(builder.info.metadata)


def label_map_from_metadata(metadata: dict) -> coco_lib.LabelMap:
  """The ``LabelMap`` stored in a built dataset's metadata."""
  return coco_lib.LabelMap(category_ids=tuple(int(i) for i in metadata['category_ids']),
                           class_names=tuple(metadata['class_names']))
