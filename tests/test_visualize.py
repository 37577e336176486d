"""Tests of yolact_jax.visualize: the mask blend, boxes at their coordinates, labels, grids."""

from __future__ import annotations

import numpy as np
import pytest

from yolact_jax import visualize as vis
from yolact_jax.predict import Detections


def grey_image(h=40, w=50, value=100):
  return np.full((h, w, 3), value, np.uint8)


def test_class_colours_are_distinct_and_deterministic():
  colours = [vis.class_colour(c) for c in range(80)]
  assert len(set(colours)) == 80
  assert colours == [vis.class_colour(c) for c in range(80)]
  assert all(0 <= v <= 255 for colour in colours for v in colour)


@pytest.mark.parametrize('channel_order', ['rgb', 'bgr'])
def test_mask_blend_colours_exactly_the_mask_pixels(channel_order):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  mask = np.zeros((30, 40), np.uint8)
  mask[5:12, 8:30] = 1
  mask[20, 3] = 1
  out = vis.draw_instances(image, [[0, 0, 1, 1]], [7], masks=mask[None], alpha=0.4,
                           channel_order=channel_order, draw_boxes=False, draw_labels=False)
  colour = np.array(vis.class_colour(7), np.float32)
  if channel_order == 'bgr':
    colour = colour[::-1]
  expected = np.rint(0.6 * image.astype(np.float32) + 0.4 * colour).astype(np.uint8)
  inside = mask.astype(bool)
  np.testing.assert_array_equal(out[inside], expected[inside])
  np.testing.assert_array_equal(out[~inside], image[~inside])
  assert out.dtype == np.uint8 and not np.shares_memory(out, image)


def test_first_instance_is_painted_on_top():
  mask = np.ones((2, 10, 10), np.uint8)
  out = vis.draw_instances(grey_image(10, 10), np.zeros((2, 4)), [0, 1], masks=mask, alpha=1.0,
                           draw_boxes=False, draw_labels=False)
  assert tuple(out[5, 5]) == vis.class_colour(0)


def test_box_is_drawn_at_its_coordinates():
  image = grey_image()
  x1, y1, x2, y2 = 10, 8, 30, 25
  out = vis.draw_instances(image, [[x1, y1, x2, y2]], [3], draw_labels=False)
  colour = np.array(vis.class_colour(3), np.uint8)
  drawn = np.any(out != image, axis=-1)
  outline = np.zeros_like(drawn)
  outline[y1, x1:x2 + 1] = outline[y2, x1:x2 + 1] = True
  outline[y1:y2 + 1, x1] = outline[y1:y2 + 1, x2] = True
  np.testing.assert_array_equal(drawn, outline)
  assert np.all(out[outline] == colour)


def test_labels_are_drawn_near_the_box_and_inside_the_image():
  image = grey_image(60, 80)
  out = vis.draw_instances(image, [[20, 30, 60, 50], [70, 0, 80, 10]], [0, 1],
                           scores=[0.91, 0.5], names=['cat', 'dog'], draw_boxes=False)
  changed_rows, changed_cols = np.nonzero(np.any(out != image, axis=-1))
  assert changed_rows.min() >= 0 and changed_cols.max() < 80
  # the first label's strip ends at the box's top edge, starting at its left edge
  assert np.any(out[29, 20] != image[29, 20]) and not np.any(out[31:, :19] != image[31:, :19])
  assert vis.label_text('cat', 0.91) == 'cat 0.91' and vis.label_text('cat', None) == 'cat'


def test_draw_detections_applies_display_filters():
  masks = np.zeros((3, 20, 20), np.uint8)
  for i in range(3):
    masks[i, i * 5:i * 5 + 3, :] = 1
  dets = Detections(np.array([[0, 0, 5, 5]] * 3), np.array([0, 1, 2]), ('a', 'b', 'c'),
                    np.array([0.9, 0.6, 0.3], np.float32), masks, (20, 20))
  image = grey_image(20, 20)
  out = vis.draw_detections(image, dets, score_threshold=0.5, top_k=1, draw_boxes=False,
                            draw_labels=False)
  assert np.any(out[0] != image[0]) and not np.any(out[5:] != image[5:])
  everything = vis.draw_detections(image, dets, draw_boxes=False, draw_labels=False)
  assert np.any(everything[10] != image[10])


def test_display_ranks_and_labels_by_the_rescored_mask_score():
  n = 4
  dets = Detections(np.array([[0, 0, 5, 5]] * n), np.arange(n), ('a', 'b', 'c', 'd'),
                    np.array([0.9, 0.8, 0.7, 0.1], np.float32), np.zeros((n, 20, 20), np.uint8),
                    (20, 20), mask_scores=np.array([0.2, 0.85, 0.6, 0.95], np.float32))
  shown = vis.display_detections(dets)
  assert shown.classes.tolist() == [3, 1, 2, 0]
  np.testing.assert_array_equal(shown.scores, dets.mask_scores[[3, 1, 2, 0]])
  np.testing.assert_array_equal(shown.mask_scores, shown.scores)
  # class score > threshold first (d goes), then mask-score order, top_k, stop below threshold
  assert vis.display_detections(dets, 0.5).classes.tolist() == [1, 2]
  assert vis.display_detections(dets, 0.5, top_k=1).classes.tolist() == [1]
  assert vis.display_detections(dets, top_k=2).class_names == ('d', 'b')
  # YOLACT (mask scores = scores): the same as select
  v1 = Detections(dets.boxes, dets.classes, dets.class_names, dets.scores, dets.masks, (20, 20))
  assert vis.display_detections(v1, 0.5, top_k=2).classes.tolist() == v1.select(
      0.5, 2).classes.tolist()


def test_bad_inputs_are_errors():
  with pytest.raises(ValueError, match='uint8'):
    vis.draw_instances(np.zeros((4, 4, 3), np.float32), [], [])
  with pytest.raises(ValueError, match='masks of shape'):
    vis.draw_instances(grey_image(4, 4), [[0, 0, 1, 1]], [0], masks=np.ones((1, 5, 4)))


def test_make_grid_places_panels_in_cells():
  a = np.full((10, 20, 3), 10, np.uint8)
  b = np.full((15, 12, 3), 200, np.uint8)
  c = np.full((5, 5, 3), 90, np.uint8)
  grid = vis.make_grid([a, b, c], columns=2, pad=3, background=255)
  assert grid.shape == (3 + 2 * (15 + 3), 3 + 2 * (20 + 3), 3)
  np.testing.assert_array_equal(grid[3:13, 3:23], a)
  np.testing.assert_array_equal(grid[3:18, 26:38], b)
  np.testing.assert_array_equal(grid[21:26, 3:8], c)
  assert np.all(grid[13:18, 3:23] == 255) and np.all(grid[:3] == 255)
  titled = vis.make_grid([a, b], titles=['prediction', 'ground truth'], pad=2)
  assert titled.shape[0] > 2 + 15 + 2 and titled.shape[1] == 2 + 2 * (20 + 2)
  assert np.any(titled[:titled.shape[0] - 17] != 255)  # title text drawn above the panels
  with pytest.raises(ValueError, match='titles'):
    vis.make_grid([a, b], titles=['one'])
  with pytest.raises(ValueError, match='panel 0'):
    vis.make_grid([a[..., 0]])


def test_fit_to_tile_scales_and_centres_instances():
  image = np.zeros((50, 100, 3), np.uint8)
  image[10:20, 30:60] = 200
  mask = np.zeros((50, 100), np.uint8)
  mask[10:20, 30:60] = 1
  tiled, boxes, masks = vis.fit_to_tile(image, [[30, 10, 60, 20]], mask[None], 200)
  # scale 2, the 100 x 200 image centred vertically: 50 px above and below
  assert tiled.shape == (200, 200, 3) and (tiled[:50] == 255).all() and (tiled[150:] == 255).all()
  np.testing.assert_array_equal(boxes, [[60, 70, 120, 90]])
  assert masks.shape == (1, 200, 200)
  np.testing.assert_array_equal(np.argwhere(masks[0])[[0, -1]], [[70, 60], [89, 119]])
  assert (tiled[72:88, 62:118] == 200).all()  # inside the bilinear edge
