"""Tests of yolact_jax.evaluation (and bench.fps): ground truth as predictions scores
AP 1, our COCOeval wrapper equals pycocotools on the reference detections, results records equal
the original's dets.json (also per image), bad inputs are clear errors, and inference over a dataset on the tiny
preset compiles once and skips unreadable images."""

from __future__ import annotations

import copy
import json
import warnings

import jax
import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.reference_data import RESNET50_DIR, load_npz, require_reference
from yolact_jax.bench import fps, timing
from yolact_jax.bench import inputs as bench_inputs
from yolact_jax import evaluation as ev
from yolact_jax.checkpoint.convert import CheckpointError
from yolact_jax.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from yolact_jax.config import get_config
from yolact_jax.data import coco as coco_lib
from yolact_jax.data import loader, synthetic, tfds_builder
from yolact_jax.host import fit_canvas
from yolact_jax.model.yolact import Yolact
from yolact_jax.predict import Detections, inference_program

pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')  # pycocotools on numpy 2

DETECT_ALL = 'detect.nms_conf_thresh=0.0'  # a random model's scores are all near 1/5


@pytest.fixture(scope='module')
def synthetic_dir(tmp_path_factory):
  """6 val images of 96..160 px with crowds, and 4 train images (for the TFDS build)."""
  root = tmp_path_factory.mktemp('synthetic')
  synthetic.generate_synthetic_coco(root, num_train=4, num_val=6, seed=5, side_range=(96, 160),
                                    crowd_fraction=0.5)
  return root


@pytest.fixture(scope='module')
def eval_set(synthetic_dir):
  return ev.coco_eval_set(*synthetic.dataset_paths(synthetic_dir, 'val'))


@pytest.fixture(scope='module')
def tiny_variables():
  cfg = get_config('yolact_tiny')
  x = np.zeros((1, cfg.max_size, cfg.max_size, 3), np.float32)
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  return jax.device_get(jax.jit(model.init)(jax.random.key(0), x))


def gt_as_detections(eval_set: ev.EvalSet) -> list[ev.ImageDetections]:
  """Every non-crowd GT object of every image as a detection with score 1."""
  gt = eval_set.ground_truth
  class_of = {c: i for i, c in enumerate(eval_set.category_ids)}
  items = []
  for image_id in eval_set.image_ids:
    info = gt.imgs[image_id]
    anns = [a for a in gt.imgToAnns[image_id] if not a['iscrowd']]
    xywh = np.array([a['bbox'] for a in anns], np.float64).reshape(-1, 4)
    assert np.all(xywh == np.round(xywh))  # synthetic boxes are integer (toBbox of the mask)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.int64)
    classes = np.array([class_of[a['category_id']] for a in anns], np.int64)
    masks = np.stack([gt.annToMask(a) for a in anns]).astype(np.uint8)
    items.append(ev.ImageDetections(image_id, Detections(
        boxes, classes, tuple(eval_set.class_names[c] for c in classes),
        np.ones(len(anns), np.float32), masks, (info['height'], info['width']))))
  return items


# ---------------------------------------------------------------------------------------------
# Ground truth as predictions


def test_ground_truth_as_predictions_scores_ap_one(eval_set, tmp_path):
  assert any(a['iscrowd'] for a in eval_set.ground_truth.dataset['annotations'])
  bbox, segm = ev.detections_to_coco_results(gt_as_detections(eval_set), eval_set.category_ids)
  bbox_file, segm_file = ev.write_results(tmp_path, bbox, segm)  # through the written files
  summary = ev.coco_evaluate(eval_set.ground_truth, bbox_file, segm_file)
  assert summary['num_images'] == len(eval_set) == 6
  for iou_type in ('bbox', 'segm'):
    values = summary[iou_type]
    assert values['AP'] == values['AP50'] == values['AP75'] == 1.0
    assert values['AR100'] == 1.0
    assert all(values[name] in (1.0, -1.0) for name in ('APs', 'APm', 'APl'))
    assert set(values['per_class_AP']) == set(eval_set.class_names)
    assert all(ap in (1.0, -1.0) for ap in values['per_class_AP'].values())
    assert values['num_detections'] == len(bbox)
  assert summary['box_map'] == summary['mask_map'] == 1.0


def test_corrupt_ground_truth_is_left_out_instead_of_crashing_cocoeval(eval_set, caplog):
  """A NaN polygon coordinate makes pycocotools segfault in COCOeval; a coordinate of 1e9
  allocates gigabytes. Such annotations are left out of the scored copy (one warning each), so
  the ground truth as predictions still scores AP 1 over the rest."""
  data = copy.deepcopy(eval_set.ground_truth.dataset)
  image = data['images'][0]
  corrupt = [float('nan'), 1.0, 5.0, 1.0, 5.0, 5.0], [1.0, 1.0, 1e9, 1.0, 5.0, 5.0]
  for offset, polygon in enumerate(corrupt):
    data['annotations'].append({'id': 90000 + offset, 'image_id': image['id'],
                                'category_id': data['categories'][0]['id'], 'iscrowd': 0,
                                'bbox': [1.0, 1.0, 4.0, 4.0], 'segmentation': [polygon]})
  with caplog.at_level('WARNING', logger='yolact_jax.evaluation.ground_truth'):
    gt = ev.load_ground_truth(data)
  assert 90000 not in gt.anns and 90001 not in gt.anns
  assert len(gt.anns) == len(eval_set.ground_truth.anns)
  assert 'annotation 90000' in caplog.text and 'annotation 90001' in caplog.text
  assert '2 of' in caplog.text
  bbox, segm = ev.detections_to_coco_results(gt_as_detections(eval_set), eval_set.category_ids)
  summary = ev.coco_evaluate(gt, bbox, segm)
  assert summary['box_map'] == summary['mask_map'] == 1.0


def test_ground_truth_without_area_gets_the_mask_area(eval_set):
  data = copy.deepcopy(eval_set.ground_truth.dataset)
  areas = [ann.pop('area') for ann in data['annotations']]
  gt = ev.load_ground_truth(data)
  assert all('area' not in ann for ann in data['annotations'])  # the caller's dict is kept
  # the synthetic file's areas are the masks' pixel counts too
  assert [gt.anns[ann['id']]['area'] for ann in data['annotations']] == areas
  no_segmentation = dict(data['annotations'][0], bbox=[1, 2, 3, 4])
  del no_segmentation['segmentation']
  assert ev.annotation_area(no_segmentation, 100, 100) == 12.0


def test_ground_truth_from_records_and_tfds_equal_the_annotation_file(synthetic_dir, eval_set,
                                                                      tmp_path):
  bbox, segm = ev.detections_to_coco_results(gt_as_detections(eval_set), eval_set.category_ids)
  bbox = [dict(r, score=0.5 + 0.01 * (i % 7)) for i, r in enumerate(bbox)]  # some ranking
  bbox[0]['bbox'] = [v + 3 for v in bbox[0]['bbox']]  # and a few imperfect ones
  segm[1] = dict(segm[1], segmentation=segm[0]['segmentation'])
  expected = ev.coco_evaluate(eval_set.ground_truth, bbox, segm)

  dataset = coco_lib.CocoDataset(*synthetic.dataset_paths(synthetic_dir, 'val'),
                                 keep='with_annotations')
  from_records = ev.records_eval_set(loader.InMemoryRecordSource.from_coco(dataset),
                                     dataset.category_ids, dataset.class_names)
  builder_dir, problems = tfds_builder.build_tfds_dataset(synthetic_dir, tmp_path / 'tfds',
                                                          config='synthetic')
  assert problems == []
  from_tfds = ev.tfds_eval_set(builder_dir, 'validation')
  for other in (from_records, from_tfds):
    assert other.image_ids == eval_set.image_ids
    np.testing.assert_array_equal(other.image_sizes, eval_set.image_sizes)
    assert other.category_ids == (1, 3, 5, 7)
    got = ev.coco_evaluate(other.ground_truth, bbox, segm)
    for iou_type in ('bbox', 'segm'):
      for name in ('AP', 'AP50', 'AP75', 'AR1', 'AR10', 'AR100'):
        assert got[iou_type][name] == pytest.approx(expected[iou_type][name], abs=1e-12)
  assert 0 < expected['bbox']['AP'] < 1
  assert ev.tfds_eval_set(builder_dir, 'validation', max_images=2).image_ids == \
      eval_set.image_ids[:2]


# ---------------------------------------------------------------------------------------------
# The reference detections (the original's dets.json)


def reference_ground_truth() -> dict:
  """A small GT for the two reference images (480x640, 640x427): some reference detections
  moved and grown a little (their masks shifted), a few objects nothing detects, one crowd."""
  ref = load_npz('yolact_resnet50', 'dets.npz')
  rng = np.random.default_rng(0)
  images, annotations = [], []

  def add(image_id, category_id, mask, crowd=0):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                        'category_id': int(category_id), 'iscrowd': crowd,
                        'bbox': [float(v) for v in mask_util.toBbox(rle)],
                        'area': float(mask_util.area(rle)),
                        'segmentation': {'size': rle['size'],
                                         'counts': rle['counts'].decode('ascii')}})

  for b in range(2):
    h, w = (int(v) for v in ref[f'orig_hw_{b}'])
    images.append({'id': b, 'height': h, 'width': w, 'file_name': f'{b}.jpg'})
    for d in (0, 1, 3, 6, 10, 15, 24, 40, 60):
      mask = ref[f'masks_{b}'][d]
      if mask.sum() == 0:
        continue
      shift = rng.integers(-6, 7, 2)
      add(b, COCO_CATEGORY_IDS[ref[f'classes_{b}'][d]], np.roll(mask, tuple(shift), (0, 1)))
    for _ in range(3):  # unmatched objects
      mask = np.zeros((h, w), np.uint8)
      y, x = rng.integers(0, h - 60), rng.integers(0, w - 60)
      mask[y:y + rng.integers(10, 60), x:x + rng.integers(10, 60)] = 1
      add(b, COCO_CATEGORY_IDS[rng.integers(0, 80)], mask)
    crowd = np.zeros((h, w), np.uint8)
    crowd[: h // 3, : w // 3] = 1
    add(b, COCO_CATEGORY_IDS[ref[f'classes_{b}'][2]], crowd, crowd=1)
  categories = [{'id': c, 'name': n} for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]
  return {'images': images, 'annotations': annotations, 'categories': categories}


def test_reference_detections_score_as_with_pycocotools_directly():
  dets = json.loads(require_reference('yolact_resnet50', 'dets.json').read_text())
  gt_dict = reference_ground_truth()
  ours = ev.coco_evaluate(copy.deepcopy(gt_dict), dets['bbox'], dets['segm'])

  gt = COCO()
  gt.dataset = copy.deepcopy(gt_dict)
  gt.createIndex()
  assert ours['num_images'] == 2
  for iou_type in ('bbox', 'segm'):
    direct = COCOeval(gt, gt.loadRes(copy.deepcopy(dets[iou_type])), iou_type)
    direct.evaluate()
    direct.accumulate()
    direct.summarize()
    assert [ours[iou_type][n] for n in ev.METRIC_NAMES] == [float(v) for v in direct.stats]
    assert 0 < ours[iou_type]['AP'] < 1 and ours[iou_type]['num_detections'] == 200
    precision = direct.eval['precision'][:, :, :, 0, 2]  # area all, maxDets 100
    for k, cat_id in enumerate(direct.params.catIds):
      p = precision[:, :, k]
      expected = float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0
      assert ours[iou_type]['per_class_AP'][COCO_CLASSES[k]] == expected
      assert COCO_CATEGORY_IDS[k] == cat_id
  # the lists handed in are not modified (pycocotools' loadRes adds keys to its records)
  assert dets == json.loads((RESNET50_DIR / 'dets.json').read_text())


def test_results_records_equal_the_original_dets_json(tmp_path):
  ref = load_npz('yolact_resnet50', 'dets.npz')
  expected = json.loads(require_reference('yolact_resnet50', 'dets.json').read_text())
  items = []
  for b in range(2):
    classes = ref[f'classes_{b}']
    items.append(ev.ImageDetections(b, Detections(
        ref[f'boxes_{b}'], classes, tuple(COCO_CLASSES[c] for c in classes), ref[f'scores_{b}'],
        ref[f'masks_{b}'], tuple(int(v) for v in ref[f'orig_hw_{b}']))))
  bbox, segm = ev.detections_to_coco_results(items, COCO_CATEGORY_IDS)
  paths = ev.write_results(tmp_path, bbox, segm)
  assert [p.split('/')[-1] for p in paths] == ['bbox_detections.json', 'mask_detections.json']
  bbox, segm = (json.loads(open(p).read()) for p in paths)

  assert len(bbox) == len(expected['bbox']) == len(segm) == len(expected['segm']) == 200
  for ours, theirs in zip(bbox, expected['bbox']):
    assert set(ours) == set(theirs) == {'image_id', 'category_id', 'bbox', 'score'}
    assert (ours['image_id'], ours['category_id']) == (theirs['image_id'], theirs['category_id'])
    assert ours['bbox'] == theirs['bbox']
    assert ours['score'] == pytest.approx(theirs['score'], abs=1e-6)
  for ours, theirs in zip(segm, expected['segm']):
    assert set(ours) == set(theirs) == {'image_id', 'category_id', 'segmentation', 'score'}
    assert (ours['image_id'], ours['category_id']) == (theirs['image_id'], theirs['category_id'])
    assert ours['score'] == pytest.approx(theirs['score'], abs=1e-6)
    assert isinstance(ours['segmentation']['counts'], str)
    assert ours['segmentation']['size'] == theirs['segmentation']['size']
    np.testing.assert_array_equal(mask_util.decode(ours['segmentation']),
                                  mask_util.decode(theirs['segmentation']))


def test_records_skip_boxes_without_area_and_check_class_indices():
  masks = np.zeros((2, 5, 6), np.uint8)
  masks[0, 1:4, 1:4] = 1
  dets = Detections(np.array([[1, 1, 4, 4], [2, 3, 2, 5]]), np.array([3, 0]), ('d', 'a'),
                    np.array([0.75, 0.5], np.float32), masks, (5, 6))
  bbox, segm = ev.detections_to_coco_results([(9, dets)], (1, 3, 5, 7))
  assert bbox == [{'image_id': 9, 'category_id': 7, 'bbox': [1.0, 1.0, 3.0, 3.0], 'score': 0.75}]
  assert len(segm) == 1 and segm[0]['category_id'] == 7
  with pytest.raises(ev.ResultsError, match='class index 3 has no category id'):
    ev.detections_to_coco_results([(9, dets)], (1, 3))


def test_coco_records_reproduce_the_original_json():
  ref = load_npz('yolact_resnet50', 'dets.npz')
  expected = json.loads(require_reference('yolact_resnet50', 'dets.json').read_text())
  names = get_config('yolact_resnet50').dataset.class_names
  bbox, segm = [], []
  for b in range(2):
    dets = Detections(ref[f'boxes_{b}'], ref[f'classes_{b}'],
                      tuple(names[c] for c in ref[f'classes_{b}']), ref[f'scores_{b}'],
                      ref[f'masks_{b}'], tuple(ref[f'orig_hw_{b}']))
    records = ev.to_coco_results(dets, b, ev.coco_category_ids(names))
    bbox += records[0]
    segm += records[1]
  assert json.loads(json.dumps(bbox)) == expected['bbox']
  assert json.loads(json.dumps(segm)) == expected['segm']


def test_box_records_carry_class_scores_and_mask_records_mask_scores():
  masks = np.zeros((3, 4, 6), np.uint8)
  masks[:, 1:3, 2:5] = 1
  boxes = np.array([[2, 1, 5, 3], [0, 0, 6, 4], [1, 1, 3, 3]])
  scores = np.array([0.9, 0.5, 0.25], np.float32)
  mask_scores = np.array([0.3, 0.45, 1.2], np.float32)  # rescored: any order, may exceed 1
  dets = Detections(boxes, np.array([1, 0, 3]), ('b', 'a', 'd'), scores, masks, (4, 6),
                    mask_scores=mask_scores)
  bbox, segm = ev.to_coco_results(dets, 7, (1, 2, 3, 4))
  assert [r['score'] for r in bbox] == pytest.approx(scores.tolist())
  assert [r['score'] for r in segm] == pytest.approx(mask_scores.tolist())
  assert [r['category_id'] for r in segm] == [r['category_id'] for r in bbox] == [2, 1, 4]
  # without mask scores (YOLACT) both record kinds carry the class score
  v1 = Detections(boxes, np.array([1, 0, 3]), ('b', 'a', 'd'), scores, masks, (4, 6))
  assert v1.mask_scores is v1.scores
  assert [r['score'] for r in ev.to_coco_results(v1, 7, (1, 2, 3, 4))[1]] == pytest.approx(
      scores.tolist())


def test_plus_coco_records_reproduce_the_original_json():
  ref = load_npz('yolact_plus_resnet50', 'dets.npz')
  expected = json.loads(require_reference('yolact_plus_resnet50', 'dets.json').read_text())
  names = get_config('yolact_resnet50').dataset.class_names
  dets = Detections(ref['boxes_0'], ref['classes_0'], tuple(names[c] for c in ref['classes_0']),
                    ref['scores_0'], ref['masks_0'], tuple(ref['orig_hw_0']),
                    mask_scores=ref['mask_scores_0'])
  bbox, segm = ev.to_coco_results(dets, 0, ev.coco_category_ids(names))
  assert json.loads(json.dumps(bbox)) == expected['bbox']
  assert json.loads(json.dumps(segm)) == expected['segm']
  assert any(r['score'] != s['score'] for r, s in zip(bbox, segm))


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')  # pycocotools
def test_coco_records_skip_empty_boxes_and_map_categories():
  masks = np.zeros((3, 4, 6), np.uint8)
  masks[0, 1:3, 2:5] = 1
  dets = Detections(np.array([[2, 1, 5, 3], [3, 0, 3, 4], [0, 0, 6, 4]]), np.array([1, 0, 3]),
                    ('b', 'a', 'd'), np.array([0.9, 0.5, 0.25], np.float32), masks, (4, 6))
  bbox, segm = ev.to_coco_results(dets, 7, ev.coco_category_ids(('a', 'b', 'c', 'd')))
  assert [r['category_id'] for r in bbox] == [2, 4]  # zero-width box skipped; index + 1
  assert bbox[0] == {'image_id': 7, 'category_id': 2, 'bbox': [2.0, 1.0, 3.0, 2.0],
                     'score': pytest.approx(0.9)}
  assert segm[0]['segmentation']['size'] == [4, 6]
  assert isinstance(segm[0]['segmentation']['counts'], str)
  decoded = mask_util.decode({'size': [4, 6], 'counts': segm[0]['segmentation']['counts']})
  np.testing.assert_array_equal(decoded, masks[0])
  assert ev.coco_category_ids(get_config('yolact_base').dataset.class_names)[11] == 13


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_category_id_is_named_with_the_valid_ones(eval_set, tmp_path):
  bbox, segm = ev.detections_to_coco_results(gt_as_detections(eval_set), eval_set.category_ids)
  bbox[2] = dict(bbox[2], category_id=4)
  with pytest.raises(ev.ResultsError, match=r'unknown category id\(s\) \[4\].*category ids '
                     r'\[1, 3, 5, 7\]'):
    ev.coco_evaluate(eval_set.ground_truth, bbox, segm)
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps(bbox))
  with pytest.raises(ev.ResultsError, match='bad.json: unknown category'):
    ev.coco_evaluate(eval_set.ground_truth, str(path), None)


def test_other_malformed_results(eval_set, tmp_path):
  bbox, segm = ev.detections_to_coco_results(gt_as_detections(eval_set), eval_set.category_ids)
  with pytest.raises(ev.ResultsError, match=r'image id\(s\) \[12345\] are not in the ground'):
    ev.coco_evaluate(eval_set.ground_truth, [dict(bbox[0], image_id=12345)], None)
  with pytest.raises(ev.ResultsError, match=r"record 0 lacks \['segmentation'\]"):
    ev.coco_evaluate(eval_set.ground_truth, None, bbox)
  with pytest.raises(FileNotFoundError, match='results file not found: .*missing.json'):
    ev.coco_evaluate(eval_set.ground_truth, str(tmp_path / 'missing.json'), None)
  (tmp_path / 'x.json').write_text('{"annotations": []}')
  with pytest.raises(ev.ResultsError, match="x.json: expected a list of results or an object "
                     "with key 'bbox'"):
    ev.coco_evaluate(eval_set.ground_truth, str(tmp_path / 'x.json'), None)


def test_empty_results_give_zeros_with_a_warning(eval_set):
  with pytest.raises(IndexError):  # why: pycocotools' loadRes cannot take an empty list
    eval_set.ground_truth.loadRes([])
  _, segm = ev.detections_to_coco_results(gt_as_detections(eval_set), eval_set.category_ids)
  with pytest.warns(UserWarning, match='no bbox detections to evaluate'):
    summary = ev.coco_evaluate(eval_set.ground_truth, [], segm)
  assert summary['bbox']['AP'] == summary['bbox']['AR100'] == summary['box_map'] == 0.0
  assert summary['bbox']['num_detections'] == 0
  assert all(v in (0.0, -1.0) for v in summary['bbox']['per_class_AP'].values())
  assert summary['segm']['AP'] == 1.0


def test_missing_dataset_paths_are_named(synthetic_dir, tmp_path):
  ann_file, image_dir = synthetic.dataset_paths(synthetic_dir, 'val')
  with pytest.raises(FileNotFoundError, match='annotation file not found: .*nope.json'):
    ev.coco_eval_set(tmp_path / 'nope.json', image_dir)
  with pytest.raises(FileNotFoundError, match='image folder not found: .*no_images'):
    ev.coco_eval_set(ann_file, tmp_path / 'no_images')
  with pytest.raises(FileNotFoundError, match='TFDS dataset directory not found: .*no_tfds'):
    ev.tfds_eval_set(tmp_path / 'no_tfds')
  with pytest.raises(FileNotFoundError, match='annotation file not found'):
    ev.coco_evaluate(tmp_path / 'nope.json', [], [])


def test_missing_weights_and_wrong_classes_are_clear(eval_set):
  cfg = get_config('yolact_tiny')
  with pytest.raises(CheckpointError, match='Weights not found: .*no_such_weights'):
    ev.run_inference(cfg, '/tmp/no_such_weights', eval_set, progress=False)
  with pytest.raises(ValueError, match='predicts 80 classes but the dataset .* has 4 categories'):
    ev.run_inference(get_config('yolact_base'), {'params': {}}, eval_set, progress=False)


# ---------------------------------------------------------------------------------------------
# Inference over a dataset (tiny preset, random weights)


def test_evaluate_model_compiles_once_and_repeats_identically(eval_set, tiny_variables,
                                                              tmp_path):
  cfg = get_config('yolact_tiny', [DETECT_ALL])
  program = inference_program(cfg)
  first = ev.evaluate_model(cfg, tiny_variables, eval_set, batch_size=4, output_dir=tmp_path)
  traces = program.trace_count
  second = ev.evaluate_model(cfg, tiny_variables, eval_set, batch_size=4)
  assert program.trace_count == traces  # no recompilation on the second call
  assert first == second
  assert first['num_images'] == 6 and first['skipped_images'] == []
  assert first['bbox']['num_detections'] == 6 * cfg.detect.max_num_detections
  assert set(first) >= {'bbox', 'segm', 'box_map', 'mask_map', 'num_images'}
  assert set(first['segm']) == set(ev.METRIC_NAMES) | {'per_class_AP', 'num_detections'}
  written = json.loads((tmp_path / 'mask_detections.json').read_text())
  assert len(written) == first['segm']['num_detections']
  assert {r['image_id'] for r in written} == set(eval_set.image_ids)

  items = ev.run_inference(cfg, tiny_variables, eval_set, batch_size=4, progress=False)
  assert program.trace_count == traces
  assert [item.image_id for item in items] == list(eval_set.image_ids)
  for item, (h, w) in zip(items, eval_set.image_sizes):
    assert item.image_size == (h, w) and item.detections.masks.shape[1:] == (h, w)
  bbox, _ = ev.detections_to_coco_results(items, eval_set.category_ids)
  assert bbox == json.loads((tmp_path / 'bbox_detections.json').read_text())


def test_evaluate_model_on_a_record_source_with_its_annotation_file(synthetic_dir, eval_set,
                                                                   tiny_variables):
  """train.py's validation hook: the same source every call; the EvalSet is built once."""
  cfg = get_config('yolact_tiny', [DETECT_ALL])
  ann_file, image_dir = synthetic.dataset_paths(synthetic_dir, 'val')
  source = loader.InMemoryRecordSource.from_coco(
      coco_lib.CocoDataset(ann_file, image_dir, keep='with_annotations'))
  built = ev.cached_eval_set(source, None, ann_file)
  assert ev.cached_eval_set(source, None, ann_file) is built
  assert built.image_ids == eval_set.image_ids and built.category_ids == (1, 3, 5, 7)
  via_source = ev.evaluate_model(cfg, tiny_variables, source, batch_size=4, ann_file=ann_file,
                                 max_images=3)
  via_set = ev.evaluate_model(cfg, tiny_variables, eval_set.first(3), batch_size=4)
  assert via_source == via_set and via_source['num_images'] == 3
  with pytest.raises(TypeError, match='record source with ann_file'):
    ev.as_eval_set(source)


def test_unreadable_image_is_skipped_and_left_out_of_the_metric(synthetic_dir, tiny_variables,
                                                               tmp_path):
  import shutil
  ann_file, image_dir = synthetic.dataset_paths(synthetic_dir, 'val')
  copy_dir = tmp_path / 'val'
  shutil.copytree(image_dir, copy_dir)
  eval_set = ev.coco_eval_set(ann_file, copy_dir, max_images=3)
  broken = eval_set.source[1]
  with open(broken['image_path'], 'wb') as f:
    f.write(b'not an image')
  cfg = get_config('yolact_tiny', [DETECT_ALL])
  summary = ev.evaluate_model(cfg, tiny_variables, eval_set, batch_size=2)
  assert summary['num_images'] == 2
  assert [s['image_id'] for s in summary['skipped_images']] == [broken['image_id']]
  assert 'cannot decode image' in summary['skipped_images'][0]['reason']


# ---------------------------------------------------------------------------------------------
# Benchmark helpers


def test_benchmark_helpers():
  images = [np.zeros((h, w, 3), np.uint8) for h, w in ((10, 20), (130, 40), (5, 5))]
  assert fit_canvas([image.shape[:2] for image in images]) == (256, 128)
  assert fit_canvas([image.shape[:2] for image in images], step=1) == (130, 40)
  assert [i.shape for i in bench_inputs.cycle_to(images, 5)] == [
      (10, 20, 3), (130, 40, 3), (5, 5, 3), (10, 20, 3), (130, 40, 3)]
  batches = bench_inputs.make_batches(images, 2, (256, 128))
  assert [(c.shape, n) for c, _, n in batches] == [((2, 256, 128, 3), 2), ((2, 256, 128, 3), 1)]
  np.testing.assert_array_equal(batches[1][1], [[5, 5], [1, 1]])
  stats = timing.summarize_times([0.001, 0.003, 0.002])
  assert {k: stats[k] for k in ('median_ms', 'mean_ms', 'min_ms', 'max_ms', 'runs')} == \
      pytest.approx({'median_ms': 2.0, 'mean_ms': 2.0, 'min_ms': 1.0, 'max_ms': 3.0, 'runs': 3})
  calls = []
  durations = timing.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
  assert len(durations) == 3 and len(calls) == 5


def test_benchmark_inference_report(tiny_variables):
  cfg = get_config('yolact_tiny', [DETECT_ALL])
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((60, 80), (90, 70))]
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # nothing noisy
    report = fps.benchmark_inference(cfg, tiny_variables, images, batch_size=2,
                                              num_images=5, repeats=2, warmup=1)
  assert report['num_images'] == 6 and report['num_batches'] == 3 and report['batch_size'] == 2
  assert report['canvas_hw'] == [128, 128] and report['compile_s'] > 0
  assert report['fps'] > 0 and report['ms_per_image'] == pytest.approx(1000 / report['fps'])
  assert set(report['stages']) == set(fps.STAGES)
  for values in report['stages'].values():
    assert values['median_ms'] > 0 and values['ms_per_image'] == values['median_ms'] / 2
  json.dumps(report)  # JSON-friendly
