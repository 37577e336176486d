"""Input pipeline: COCO-format datasets, the original's transforms, TFDS and grain loaders.

Modules (import the heavy ones directly: ``loader`` pulls in grain, ``tfds_builder`` TFDS):
  coco          reader, validation with per-problem reports, label maps, raw samples.
  masks         segmentation -> mask, RLE, the loss's mask downsampling on the host.
  augment       train transform (SSDAugmentation), eval transform, normalisation.
  synthetic     deterministic COCO-format shapes dataset (the demo / test default).
  tfds_builder  array_record TFDS dataset from a COCO-format manual directory.
  loader        grain loaders with fixed-shape training batches and checkpointable state.
"""

from yolact_jax.data.augment import (TransformedSample, backbone_transform, eval_transform,
                                     train_transform)
from yolact_jax.data.coco import (BrokenSampleError, CocoDataset, CocoFormatError, LabelMap,
                                  Problem, RawSample, build_label_map, coco_label_map,
                                  decode_record)
from yolact_jax.data.masks import downsample_binarize_masks
from yolact_jax.data.synthetic import generate_synthetic_coco
