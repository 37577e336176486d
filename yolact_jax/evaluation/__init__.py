"""COCO evaluation: batched inference over a dataset, results files in the original's format, and
pycocotools' box and mask mAP.

    from yolact_jax import evaluation as ev

    eval_set = ev.coco_eval_set('instances_val2017.json', 'val2017/')     # or tfds/synthetic
    summary = ev.evaluate_model(cfg, variables, eval_set, batch_size=8)
    summary['mask_map'], summary['segm']['AP50'], summary['bbox']['per_class_AP']['person']

The layers, each usable alone (every public name is re-exported here):

* :mod:`.ground_truth`: a pycocotools ``COCO`` from an annotation file, a COCO-format dict or
  reader records, with the ``area`` COCOeval needs.
* :mod:`.eval_sets`: an :class:`EvalSet` holds what evaluation needs of a dataset: the records to
  run (images), the ground truth, and the label map (class index -> category id). Build one with
  :func:`coco_eval_set` (a COCO-format annotation file and image folder, e.g. COCO val2017 or the
  synthetic dataset), :func:`tfds_eval_set` (a split prepared by ``scripts/prepare_tfds.py``),
  :func:`synthetic_eval_set` (generated if absent) or :func:`records_eval_set` (any record source,
  ground truth from an annotation file or from the records). Only images with at least one
  annotation (crowds included) are kept, as the original's ``eval.py``.
* :mod:`.inference`: :func:`stream_inference` / :func:`run_inference`, the jitted program of
  :mod:`yolact_jax.predict` over an EvalSet on one fixed canvas, so the whole set compiles once.
* :mod:`.results`: the original's ``--output_coco_json`` records (:func:`to_coco_results`,
  :func:`detections_to_coco_results`, :class:`CocoResults`), and results files (write, read,
  check against the ground truth).
* :mod:`.coco_eval`: :func:`coco_evaluate`, pycocotools ``COCOeval`` for 'bbox' and 'segm' -> a
  summary dict (the 12 numbers by name, per-class AP).
* :mod:`.runner`: :func:`evaluate` (inference -> records and files -> COCOeval; what
  ``evaluate.py`` runs) and :func:`evaluate_model` (its summary; what a training loop calls, with
  an EvalSet or a record source and its ``ann_file``: the EvalSet is then built once and cached).
  Repeated calls with the same config, batch size and set reuse the compiled program (cached per
  config by :func:`yolact_jax.predict.inference_program`; the shapes stay fixed).
* :mod:`.report`: the printed tables.
"""

from yolact_jax.evaluation.coco_eval import (IOU_TYPES, METRIC_NAMES, coco_evaluate,
                                             evaluate_type, load_detections, per_class_ap)
from yolact_jax.evaluation.eval_sets import (EvalSet, as_eval_set, cached_eval_set,
                                             check_classes, coco_eval_set, records_eval_set,
                                             synthetic_eval_set, tfds_eval_set)
from yolact_jax.evaluation.ground_truth import (annotated_images_in_file_order, annotation_area,
                                                ground_truth_from_dict,
                                                ground_truth_from_records,
                                                images_with_annotations, load_ground_truth)
from yolact_jax.evaluation.inference import (ImageDetections, make_predictor, prefetch_map,
                                             read_first_images, read_image, run_inference,
                                             stream_inference)
from yolact_jax.evaluation.report import (format_detection_counts, format_per_class,
                                          format_report, format_summary)
from yolact_jax.evaluation.results import (BBOX_RESULTS_FILE, MASK_RESULTS_FILE, CocoResults,
                                           ResultsError, check_results, coco_category_ids,
                                           detections_to_coco_results, load_results_file,
                                           to_coco_results, write_results)
from yolact_jax.evaluation.runner import (Evaluation, evaluate, evaluate_model,
                                          predict_coco_results)
