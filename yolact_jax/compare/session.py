"""A whole comparison from ``scripts/compare_pytorch.py``'s parsed command line: threads and
device set up, both sides built, outputs compared and timed, the report written."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
from typing import Any

import numpy as np

from yolact_jax import host_memory
from yolact_jax.bench.machine import PROJECT_ROOT, cpu_info
from yolact_jax.compare.inputs import load_images, make_batches
from yolact_jax.compare.report import THREAD_ENV_VARS, markdown_report


def limit_threads(threads: int | None) -> int:
  """Pin this process to ``threads`` of its CPUs (before JAX starts: XLA's CPU client sizes its
  thread pool from the affinity, and its thread flags are ignored); returns the count used."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
  if threads and cpus and threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
    cpus = cpus[:threads]
  return len(cpus) if cpus else (threads or os.cpu_count() or 1)


def start_frameworks(threads: int | None, device: str) -> tuple[int, Any, Any]:
  """Threads pinned first, then JAX (CPU only for ``device`` 'cpu') and torch with the same
  thread count: (threads, jax, torch)."""
  threads = limit_threads(threads)
  import jax
  if device == 'cpu':
    jax.config.update('jax_platforms', 'cpu')
  import torch
  torch.set_num_threads(threads)
  if device == 'cuda' and not torch.cuda.is_available():
    raise SystemExit('--device cuda: PyTorch sees no CUDA device')
  return threads, jax, torch


def _machine(threads: int, load_before_timing: list[float], jax: Any, torch: Any
             ) -> dict[str, Any]:
  return {'cpu_model': cpu_info()['model'], 'cpu_cores_usable': threads,
          'cpu_count_total': os.cpu_count(),
          'load_average_before_timing': load_before_timing,
          'load_average': [round(x, 2) for x in os.getloadavg()],
          'thread_env': {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ},
          'torch': torch.__version__, 'jax': jax.__version__,
          'jax_device': jax.devices()[0].device_kind, 'python': platform.python_version(),
          'host_memory': host_memory.mode()}  # one process: both sides share the setting


def plus_features(cfg: Any) -> dict[str, Any]:
  """What of YOLACT++ the preset uses: DCN layers per stage and their interval, anchors per
  location, the mask-IoU network and mask / box re-scoring (all off or zero for YOLACT)."""
  model, detect = cfg.model, cfg.detect
  return {'dcn_layers': list(getattr(model.backbone, 'dcn_layers', ())),
          'dcn_interval': getattr(model.backbone, 'dcn_interval', 1),
          'num_anchors': model.anchors.num_anchors,
          'use_maskiou': bool(getattr(model, 'use_maskiou', False)),
          'rescore_mask': bool(getattr(detect, 'rescore_mask', False)),
          'rescore_bbox': bool(getattr(detect, 'rescore_bbox', False))}


def _settings(args: argparse.Namespace, context: dict[str, Any]) -> dict[str, Any]:
  return {'config': args.config, 'reference': getattr(args, 'reference', 'original'),
          'weights': context['weights'], 'inputs': context['inputs'],
          'yolact_plus': context['yolact_plus'],
          'batch_size': args.batch_size, 'device': args.device, 'threads': context['threads'],
          'torch_threads': context['torch_threads'], 'nms': args.nms,
          'match_iou': args.match_iou, 'warmup': args.warmup, 'repeats': args.repeats,
          'canvas_hw': list(context['canvas_hw']), 'yolact_repo': context['yolact_repo'],
          'original_commit': context['original_commit'], 'shims': context['shims'],
          'detect_settings': context['detect_settings'], 'ours': context.get('ours', 'live')}


def side_by_side(args: argparse.Namespace, cfg: Any, images: list[np.ndarray], jax: Any,
                 torch: Any, context: dict[str, Any]) -> dict[str, Any]:
  """Both sides built and compared: ours against the original (under its runtime shims) or,
  with ``--reference mmdet``, against mmdetection's YOLACT; ``context`` collects what the
  report's settings record. Returns the report's measured parts."""
  from yolact_jax.compare.weights import our_variables
  from yolact_jax.predict import preprocess

  batches, canvas_hw = make_batches(images, args.batch_size)
  backbone = cfg.model.backbone
  to_input = jax.jit(lambda c, s: preprocess(c, s, cfg.max_size, backbone.transform,
                                             backbone.input_resize))
  net_inputs = [np.asarray(to_input(c, s)) for c, s, _ in batches]
  variables, context['weights'] = our_variables(cfg, args.weights, args.random_weights,
                                                net_inputs[0])
  context['canvas_hw'] = canvas_hw
  from yolact_jax.compare import train
  from yolact_jax.predict import pack_canvas

  def train_step(reference: train.ReferenceTrainer) -> dict[str, Any]:
    train_images = [images[k % len(images)] for k in range(args.train_batch_size)]
    canvas, sizes = pack_canvas(train_images, canvas_hw, args.train_batch_size)
    return train.train_side_by_side(
        cfg, variables, reference, np.asarray(to_input(canvas, sizes)),
        objects=args.train_objects, seed=args.seed, warmup=args.train_warmup,
        repeats=args.train_repeats, timed=not args.skip_speed)

  device = torch.device(args.device)
  if getattr(args, 'reference', 'original') == 'mmdet':
    from yolact_jax.compare.mmdet import MmdetInference, mmdet_reference, mmdet_runtime
    with mmdet_runtime() as mmdet:
      theirs = MmdetInference(mmdet, torch, cfg, args.device, variables, net_inputs, batches)
      context.update(yolact_repo=None, original_commit=f'mmdet {mmdet.__version__}', shims=[])
      parts = _measured(args, cfg, variables, theirs, net_inputs, batches, context)
      if args.train_step:
        parts['train_step'] = train_step(mmdet_reference(
            mmdet, torch, device, cfg, variables, cfg.train.momentum, cfg.train.decay))
      return parts
  from yolact_jax.compare.original import import_original
  from yolact_jax.compare.shims import original_runtime_shims
  from yolact_jax.compare.inference import OriginalInference
  with original_runtime_shims(torch) as shims:
    context['shims'] = shims
    original = import_original(args.yolact_repo, torch)
    context.update(yolact_repo=str(original.repo), original_commit=original.commit)
    theirs = OriginalInference(original, torch, args.config, args.device, args.nms, args.weights,
                               variables, net_inputs, batches)
    parts = _measured(args, cfg, variables, theirs, net_inputs, batches, context)
    if args.train_step:
      parts['train_step'] = train_step(train.original_reference(
          original, torch, device, variables, cfg.train.momentum, cfg.train.decay, args.seed))
  return parts


def _measured(args: argparse.Namespace, cfg: Any, variables: dict, theirs: Any,
              net_inputs: list[np.ndarray], batches: list, context: dict[str, Any]
              ) -> dict[str, Any]:
  """Our side built beside ``theirs`` (the reference), outputs compared, both timed."""
  from yolact_jax.compare.inference import OurInference, compare_outputs, time_inference
  from yolact_jax.detect import detect_kwargs
  context['detect_settings'] = {'ours': detect_kwargs(cfg), 'original': theirs.detect_settings()}
  ours = OurInference(cfg, variables, net_inputs, batches, context['canvas_hw'],
                      getattr(args, 'ours', 'live'))
  context['ours'] = ours.kind
  raw_outputs, per_image, yardstick = compare_outputs(
      ours, theirs, batches, args.match_iou, args.batch_size,
      getattr(args, 'float64_yardstick', False))
  context['load_before_timing'] = [round(x, 2) for x in os.getloadavg()]
  speed = {} if args.skip_speed else time_inference(ours, theirs, len(batches), args.warmup,
                                                    args.repeats, args.batch_size)
  speed['ours_compile_s'] = ours.compile_s
  parts = {'raw_outputs': raw_outputs, 'per_image': per_image, 'speed': speed}
  if yardstick is not None:
    parts['float64_yardstick'] = yardstick
  return parts


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
  """The whole comparison ``args`` asks for: the report, also written to ``args.out`` (default
  ``results/compare_pytorch_<config>_<device>.json``) with its ``.md`` and printed."""
  from yolact_jax.compare.outputs import summarize_detection_comparison
  threads, jax, torch = start_frameworks(args.threads, args.device)
  from yolact_jax.config import get_config
  cfg = get_config(args.config, [f'detect.nms={args.nms}'])
  images, inputs_desc = load_images(args.images, args.num_images, args.seed)
  context: dict[str, Any] = {'inputs': inputs_desc, 'threads': threads,
                             'yolact_plus': plus_features(cfg)}
  parts = side_by_side(args, cfg, images, jax, torch, context)
  context['torch_threads'] = torch.get_num_threads()
  report = {
      'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'settings': _settings(args, context),
      'machine': _machine(threads, context['load_before_timing'], jax, torch),
      'raw_outputs': parts['raw_outputs'],
      **({'float64_yardstick': parts['float64_yardstick']} if 'float64_yardstick' in parts
         else {}),
      'detections': {'total': summarize_detection_comparison(parts['per_image']),
                     'per_image': parts['per_image']},
      'speed': parts['speed'],
  }
  if 'train_step' in parts:
    report['train_step'] = parts['train_step']
  out = args.out or PROJECT_ROOT / 'results' / f'compare_pytorch_{args.config}_{args.device}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1, default=float) + '\n')
  out.with_suffix('.md').write_text(markdown_report(report) + '\n')
  print(markdown_report(report))
  return report


STUDY_PRESET = 'yolact_cpu'  # the training studies' default preset (the demo's model)


def run_training_study(args: argparse.Namespace) -> dict[str, Any]:
  """``--train_steps N`` or ``--train_run ITER`` (:mod:`yolact_jax.compare.study`): the study's
  report, written to ``args.out`` (default ``results/compare_train_{steps,run}_<config>_<N>``:
  .json, .md, .png) and printed."""
  threads, jax, torch = start_frameworks(args.threads, args.device)
  from yolact_jax import train_step
  from yolact_jax.compare import study, study_report
  from yolact_jax.compare.original import import_original
  from yolact_jax.compare.original_config import describe
  from yolact_jax.compare.shims import original_runtime_shims
  from yolact_jax.config import get_config
  from yolact_jax.data import coco, loader, synthetic
  from yolact_jax.model.variables import init_variables
  name = args.config or STUDY_PRESET
  overrides = [f'train.batch_size={args.study_batch_size}'] if args.study_batch_size else []
  cfg = get_config(name, overrides)
  if args.train_run:
    cfg = train_step.stretch_schedule(cfg, args.train_run)
  paths = synthetic.generate_synthetic_coco(
      args.data_dir, num_train=args.num_train, num_val=args.num_val, seed=0,
      side_range=tuple(args.image_side), square=True)
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))
  weights_seed = args.random_weights if args.random_weights is not None else 0
  variables = jax.device_get(init_variables(cfg, seed=weights_seed))
  device = torch.device(args.device)
  with original_runtime_shims(torch):
    original = import_original(args.yolact_repo, torch)
    if args.train_steps:
      result = study.run_steps(cfg, variables, source, original, torch, device,
                               steps=args.train_steps, seed=cfg.train.seed,
                               record_every=args.record_every)
    else:
      val_set = coco.CocoDataset(*paths['val'], keep='with_annotations')
      result = study.run_whole(cfg, variables, source, val_set, original, torch, device,
                               data_seeds=args.data_seeds)
    settings = {'config': name, 'optimizer': cfg.train.optimizer, 'data_seed': cfg.train.seed,
                'weights_seed': weights_seed, 'threads': threads, 'num_val': args.num_val,
                'original_config': describe(original.config_module, cfg),
                'yolact_repo': str(original.repo), 'original_commit': original.commit,
                'command': getattr(args, 'command', '')}
  report = {'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'settings': settings, 'machine': _machine(threads, list(os.getloadavg()), jax, torch),
            'study': result}
  if args.train_steps:
    report['verdict'] = study_report.steps_verdict(result)
    kind, count, markdown, figure = ('steps', args.train_steps, study_report.steps_markdown,
                                     study_report.steps_figure)
  else:
    kind, count, markdown, figure = ('run', result['iterations'], study_report.run_markdown,
                                     study_report.run_figure)
  out = args.out or PROJECT_ROOT / 'results' / f'compare_train_{kind}_{name}_{count}.json'
  text = markdown(report)
  study_report.write(report, pathlib.Path(out), text, figure)
  print(text)
  return report
