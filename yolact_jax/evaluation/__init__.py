"""COCO evaluation: batched inference over a dataset, results files in the original's format, and
pycocotools' box and mask mAP. Every public name of the layers is re-exported here.

    from yolact_jax import evaluation as ev
    eval_set = ev.coco_eval_set('instances_val2017.json', 'val2017/')     # or tfds/synthetic
    summary = ev.evaluate_model(cfg, variables, eval_set, batch_size=8)
    summary['mask_map'], summary['segm']['AP50'], summary['bbox']['per_class_AP']['person']

The layers, each usable alone: :mod:`.ground_truth` (a pycocotools ``COCO``), :mod:`.eval_sets`
(:class:`EvalSet`: the images to run, their ground truth and label map; only images with at least
one annotation, crowds included, as the original's ``eval.py``), :mod:`.inference` (the program of
:mod:`yolact_jax.predict` on one fixed canvas, so the whole set compiles once), :mod:`.results`
(the original's ``--output_coco_json`` records and files), :mod:`.coco_eval` (``COCOeval`` ->
summary dict), :mod:`.runner` (:func:`evaluate`, :func:`evaluate_model`), :mod:`.report` (tables).
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
