"""YOLACT ResNet-101 FPN at 550 px on COCO 2017 (the paper's main model), the parent of every
other preset. Every value of the experiment is stated here: the original's ``yolact_base_config``
where it has the field.

The original reports 29.8 mask mAP on test-dev at 33.5 fps (Titan Xp). Trains from the ImageNet
file resnet101_reducedfc.pth.

Train:     yolact-jax train --config configs/yolact_base.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_base.py --weights yolact_base_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_base yolact_base_54_800000.pth weights/yolact_base
Load:      yolact_jax.config.load_config('configs/yolact_base.py') (calls get_config())
"""

from yolact_jax.coco_classes import COCO_CLASSES
from yolact_jax.config import (AnchorConfig, AugmentConfig, BackboneConfig, DatasetConfig,
                               DetectConfig, FPNConfig, HeadConfig, LossConfig, MaskConfig,
                               ModelConfig, TrainConfig, YolactConfig)


def get_config() -> YolactConfig:
  """The yolact_base experiment."""
  return YolactConfig(
      name='yolact_base',
      max_size=550,
      model=ModelConfig(
          backbone=BackboneConfig(
              kind='resnet', layers=(3, 4, 23, 3), base_width=64, selected_layers=(1, 2, 3),
              pretrained_weights='resnet101_reducedfc.pth', transform='resnet',
              input_resize='float', dcn_layers=(0, 0, 0, 0), dcn_interval=1),
          anchors=AnchorConfig(
              pred_scales=((24,), (48,), (96,), (192,), (384,)),
              pred_aspect_ratios=((1, 0.5, 2),) * 5,
              use_pixel_scales=True, preapply_sqrt=False, use_square_anchors=True),
          fpn=FPNConfig(
              num_features=256, interpolation='bilinear', num_downsample=2,
              use_conv_downsample=True, pad=True, relu_pred_layers=True,
              relu_downsample_layers=False, downsample_from_backbone=False),
          mask=MaskConfig(
              mask_dim=32, proto_src=0,
              proto_net=((256, 3, 1), (256, 3, 1), (256, 3, 1), (None, -2, 0), (256, 3, 1),
                         (32, 1, 0)),
              proto_prototype_activation='relu', proto_coeff_activation='tanh'),
          head=HeadConfig(
              extra_head_net=(256,), head_kernel=3, head_padding=1,
              share_prediction_module=True),
          use_maskiou=False, maskiou_net=()),
      loss=LossConfig(
          positive_iou_threshold=0.5, negative_iou_threshold=0.4, crowd_iou_threshold=0.7,
          ohem_negpos_ratio=3, bbox_alpha=1.5, conf_alpha=1.0, mask_alpha=6.125,
          masks_to_train=100, proto_crop=True, normalize_emulate_roi_pooling=True,
          use_semantic_segmentation_loss=True, semantic_segmentation_alpha=1.0,
          maskiou_alpha=25.0, discard_mask_area=-1, matcher='original',
          ohem_keep_negatives_without_positives=False, count_one_positive_at_least=False,
          mask_normalise_by_trained=False,
          semantic_class_offset=0, semantic_skips_empty_images=False),
      detect=DetectConfig(
          nms='fast', nms_top_k=200, nms_conf_thresh=0.05, nms_thresh=0.5,
          max_num_detections=100, rescore_mask=False, rescore_bbox=False,
          candidates_per_level=0, second_threshold=False, clamp_log_size=0.0, clip_boxes=False,
          iou_union_floor=0.0, float_boxes=False),
      augment=AugmentConfig(
          pipeline='original', photometric_distort=True, expand=True, random_sample_crop=True,
          random_mirror=True,
          discard_box_width=4 / 550, discard_box_height=4 / 550, fix_discard_box_units=False),
      train=TrainConfig(
          batch_size=8, optimizer='sgd', lr=1e-3, momentum=0.9, decay=5e-4, gamma=0.1,
          lr_steps=(280000, 600000, 700000, 750000), max_iter=800000, lr_warmup_init=1e-4,
          lr_warmup_until=500, autoscale=True, freeze_bn=None, max_instances=100, seed=0,
          compute_dtype='float32', sync_batchnorm=False, max_nonfinite_in_a_row=5,
          max_nonfinite_fraction=0.1),
      dataset=DatasetConfig(
          name='COCO 2017',
          train_images='./data/coco/images/',
          train_info='./data/coco/annotations/instances_train2017.json',
          valid_images='./data/coco/images/',
          valid_info='./data/coco/annotations/instances_val2017.json',
          class_names=COCO_CLASSES))
