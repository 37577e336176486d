"""The dataset's classes against the config's, checked before training starts.

A training source says which classes its labels index (``class_names``: ``InMemoryRecordSource``
from a ``CocoDataset``, ``TfdsRecordSource``; the categories sorted by id). The config's
``dataset.class_names`` sizes the network (``num_classes = len(class_names) + 1``).
:func:`resolve_class_names` accepts the same names, takes the dataset's names when the config
never named its classes (the COCO default) and the dataset is not COCO, and refuses anything
else with a ``ClassMismatchError`` before any step.

A source that does not say its classes is not checked here; the loader still rejects any label
index outside the config's classes (``loader.LabelError``, naming the image).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from yolact_jax.coco_classes import COCO_CLASSES

log = logging.getLogger(__name__)


class ClassMismatchError(ValueError):
  """The dataset's categories differ from the config's ``dataset.class_names``."""


def _normalise(names: Sequence[str]) -> tuple[str, ...]:
  return tuple(str(n).strip().lower() for n in names)


def _shown(names: Sequence[str], limit: int = 12) -> str:
  names = list(names)
  text = ', '.join(names[:limit])
  return f'{text}, ... ({len(names)} in all)' if len(names) > limit else text


def class_names_override(names: Sequence[str]) -> str:
  """The command-line override that sets the config's classes to ``names``."""
  return f'--config.dataset.class_names="{tuple(str(n) for n in names)!r}"'


def source_class_names(source: Any) -> tuple[str, ...] | None:
  """The class names a record source declares (class-index order), or None."""
  names = getattr(source, 'class_names', None)
  return tuple(names) if names is not None else None


def check_source(cfg: Any, source: Any) -> Any:
  """:func:`resolve_class_names` for a training record source (what the trainer calls)."""
  name = getattr(source, 'name', None)
  return resolve_class_names(cfg, source_class_names(source),
                             f'the training set {name}' if name else 'the training set')


def resolve_class_names(cfg: Any, dataset_names: Sequence[str] | None,
                        dataset: str = 'the dataset') -> Any:
  """``cfg``, or a copy with the dataset's class names (rule 2).

  1. The same names in the same order (case and surrounding blanks ignored): fine.
  2. The config's class names are the COCO default (``COCO_CLASSES``, i.e. the config never named
     its classes) and the dataset is not COCO (other names or another number of classes): the
     class names are taken from the dataset, with a logged notice, and the returned config has
     them (the run's ``config.json`` records them, so evaluation and prediction from the run
     directory see the same classes).
  3. Anything else is a ``ClassMismatchError`` before any step, naming both lists and the
     override that makes the config follow the dataset.

  Args:
    cfg: a ``YolactConfig``.
    dataset_names: the dataset's class names in label order (None: not known, not checked).
    dataset: how to name the dataset in messages (e.g. its annotation file).
  Raises:
    ClassMismatchError: rule 3.
  """
  if dataset_names is None:
    return cfg
  dataset_names = tuple(str(n) for n in dataset_names)
  config_names = tuple(cfg.dataset.class_names)
  if _normalise(dataset_names) == _normalise(config_names):
    return cfg
  if config_names == tuple(COCO_CLASSES):
    log.warning('%s is not COCO and the config does not name its classes: training on the '
                "dataset's %d classes (%s); pass %s to make this explicit", dataset,
                len(dataset_names), _shown(dataset_names), class_names_override(dataset_names))
    return dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset,
                                                                class_names=dataset_names))
  if sorted(_normalise(dataset_names)) == sorted(_normalise(config_names)):
    problem = 'the same classes in another order (labels follow the category ids)'
  else:
    extra = [n for n in dataset_names if n.strip().lower() not in _normalise(config_names)]
    missing = [n for n in config_names if n.strip().lower() not in _normalise(dataset_names)]
    problem = '; '.join(part for part in (
        f"not in the config: {_shown(extra)}" if extra else '',
        f"not in the dataset: {_shown(missing)}" if missing else '') if part)
  raise ClassMismatchError(
      f'{dataset} has {len(dataset_names)} classes ({_shown(dataset_names)}) but config '
      f'{cfg.name!r} has {len(config_names)} in dataset.class_names ({_shown(config_names)}): '
      f'{problem}. To train on the dataset\'s classes pass {class_names_override(dataset_names)}'
      ' (a new run: the class count sizes the network)')
