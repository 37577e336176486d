"""mmdetection's YOLACT ResNet-50 at 550 px on COCO 2017 (its yolact_r50_1xb8-55e_coco config):
the original's yolact_resnet50 where the two agree, mmdetection's choices where they differ, so
its checkpoints load and give its detections. mmdetection reports 29.0 mask AP on COCO val for
its yolact_r50_1x8 model (28.4 trained on 8 GPUs).

What differs from yolact_resnet50, each a named field:
* input: OpenCV's bilinear resize of the uint8 image (model.backbone.input_resize='uint8');
* FPN: no ReLU after P3-P5, P6 from C5 (model.fpn.relu_pred_layers,
  model.fpn.downsample_from_backbone);
* anchors: real rectangles, width/height 2, 1, 1/2 per location (mmdetection's ratios h/w
  0.5, 1, 2) of 24-384 px;
* Detect: the 1000 best priors of each level, no score filter before Fast NMS, score > 0.05
  after it, log sizes clamped at log(1000/16), boxes clipped to the input, IoU union >= 1e-6;
  pixel boxes as floats (detect.* fields);
* the loss: MaxIoUAssigner (each GT onto its best prior, a later GT overwriting; crowds play no
  part), OHEM keeping every negative of an image without positives, B and C over the images'
  max(positives, 1), the mask term over the masks trained, the semantic target of class c in
  channel c - 1 (mmdetection 3.3.0's gt_labels - 1), no semantic term for an image without
  objects (loss.matcher, loss.crowd_iou_threshold=1, loss.ohem_keep_negatives_without_positives,
  loss.count_one_positive_at_least, loss.mask_normalise_by_trained, loss.semantic_class_offset,
  loss.semantic_skips_empty_images);
* the augmentation: 4 px box filter, Expand, MinIoURandomCrop (its IoU test applied), Resize
  of the uint8 image, flip, photometric distortion last with a random channel order
  (augment.pipeline='mmdet');
* training: BatchNorm always trained (train.freeze_bn=False); 55 epochs of COCO train2017 at
  batch 8 (14659 iterations an epoch), lr x 0.1 at epochs 20, 42, 49 and 52, linear warmup from
  0.1 x lr over 500 iterations.
Its checkpoints keep the background as the last class channel and mmdetection's key names:
`yolact-jax convert` and every --weights reorder and rename them (yolact_jax.checkpoint.mmdet).

Train:     yolact-jax train --config configs/yolact_mmdet_r50.py --data coco --imagenet weights/
Evaluate:  yolact-jax evaluate --config yolact_mmdet_r50 --weights yolact_r50_1x8_coco.pth --data coco
Convert:   yolact-jax convert --config yolact_mmdet_r50 yolact_r50_1x8_coco.pth weights/yolact_mmdet_r50
Compare:   yolact-jax compare --reference mmdet --config yolact_mmdet_r50 --random_weights 0
Load:      yolact_jax.config.load_config('configs/yolact_mmdet_r50.py') (calls get_config())
"""

import math
from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_resnet50

EPOCH = 14659  # iterations of one COCO train2017 epoch at batch 8 (117266 images with objects)


def mmdet(base: YolactConfig, name: str) -> YolactConfig:
  """``base`` (a ResNet preset at 550 px) with mmdetection's input, FPN, anchors and Detect."""
  m = base.model
  return replace(
      base, name=name,
      model=replace(
          m, backbone=replace(m.backbone, input_resize='uint8'),
          anchors=replace(m.anchors, pred_aspect_ratios=((2, 1, 0.5),) * 5,
                          use_square_anchors=False),
          fpn=replace(m.fpn, relu_pred_layers=False, downsample_from_backbone=True)),
      detect=replace(base.detect, candidates_per_level=1000, second_threshold=True,
                     clamp_log_size=abs(math.log(16 / 1000)), clip_boxes=True,
                     iou_union_floor=1e-6, float_boxes=True),
      loss=replace(base.loss, matcher='max_iou', crowd_iou_threshold=1.0,
                   ohem_keep_negatives_without_positives=True,
                   count_one_positive_at_least=True, mask_normalise_by_trained=True,
                   semantic_class_offset=-1, semantic_skips_empty_images=True),
      augment=replace(base.augment, pipeline='mmdet'),
      train=replace(base.train, lr_steps=tuple(e * EPOCH for e in (20, 42, 49, 52)),
                    max_iter=55 * EPOCH, freeze_bn=False))


def get_config() -> YolactConfig:
  """yolact_resnet50 with mmdetection's choices; its ImageNet start is torchvision's file."""
  base = yolact_resnet50.get_config()
  base = replace(base, model=replace(base.model, backbone=replace(
      base.model.backbone, pretrained_weights='resnet50-0676ba61.pth')))
  return mmdet(base, 'yolact_mmdet_r50')
