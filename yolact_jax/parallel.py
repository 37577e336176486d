"""Data parallelism over devices and hosts on JAX's own runtime (``jax.sharding`` +
``jax.distributed``).

One ``Mesh`` with a single ``'data'`` axis spans every device of every process. A training batch
is sharded along that axis (each process contributes the images it loaded: its slice of the
global batch), the model's variables and the optimiser state are replicated, and one ``jax.jit``
program with those shardings runs on 1 or N devices; XLA inserts the gradient all-reduce.

Processes find each other through ``initialize``: an explicit coordinator (``HOST:PORT``, the
number of processes and this process's id), or the cluster auto-detection of
``jax.distributed.initialize()`` (SLURM and the like), or neither (one process). On CPU the
collectives go over gloo. Every wait is bounded: an unreachable coordinator or a wrong process
count is a time-out after ``timeout_s``, not a hang: for any process but 0 an unreachable
coordinator is a one-line :class:`DistributedError`; a coordinator that waits in vain for the
other processes is ended by JAX itself (DEADLINE_EXCEEDED) after ``timeout_s``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

DATA_AXIS = 'data'
# Environment variables whose presence means a cluster manager started this process.
_CLUSTER_ENV = ('SLURM_JOB_ID', 'OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'TPU_WORKER_HOSTNAMES',
                'KUBERNETES_SERVICE_HOST', 'MEGASCALE_COORDINATOR_ADDRESS')


class DistributedError(RuntimeError):
  """Processes could not be joined (unreachable coordinator, wrong count or id, time-out)."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 120) -> None:
  """Joins this process to the others; a no-op for one process.

  With ``coordinator_address`` all three must be given; without it, a cluster environment
  (SLURM, Open MPI, ...) is auto-detected by ``jax.distributed.initialize()``, and otherwise the
  run is one process. Must be called before JAX's backends start (before any computation).
  """
  explicit = (coordinator_address, num_processes, process_id)
  if coordinator_address is None and num_processes is None and process_id is None:
    if not any(name in os.environ for name in _CLUSTER_ENV):
      return
    kwargs: dict[str, Any] = {}
  elif None in explicit:
    raise DistributedError('--coordinator_address, --num_processes and --process_id go '
                           'together (or none of them, for cluster auto-detection)')
  elif num_processes == 1:
    return
  else:
    if not 0 <= process_id < num_processes:
      raise DistributedError(f'--process_id {process_id} is outside 0..{num_processes - 1}')
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  if coordinator_address is not None and process_id != 0:
    _wait_for_coordinator(coordinator_address, timeout_s)
  if 'cpu' in (jax.config.jax_platforms or 'cpu'):  # CPU devices in use: gloo collectives
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  where = coordinator_address or 'the auto-detected coordinator'
  watchdog = _exit_unless_joined(where, num_processes, process_id, timeout_s)
  try:
    jax.distributed.initialize(initialization_timeout=timeout_s + JAX_GRACE_S, **kwargs)
  except Exception as e:  # jax raises several types (XlaRuntimeError, ValueError, ...)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(f'could not join the processes through {where} within '
                           f'{timeout_s} s ({type(e).__name__}: {first})') from e
  finally:
    watchdog.cancel()
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def add_distributed_args(parser: Any) -> None:
  """``--coordinator_address``, ``--num_processes``, ``--process_id``, ``--distributed_timeout``
  on an argparse parser (train.py, evaluate.py)."""
  group = parser.add_argument_group(
      'multi-host (without these: cluster auto-detection, else one process)')
  group.add_argument('--coordinator_address', default=None,
                     help='HOST:PORT where process 0 runs the jax.distributed coordinator')
  group.add_argument('--num_processes', type=int, default=None, help='number of processes')
  group.add_argument('--process_id', type=int, default=None, help='this process, 0-based')
  group.add_argument('--distributed_timeout', type=int, default=120,
                     help='seconds to wait for the other processes (default 120)')


def initialize_from_args(args: Any) -> None:
  """:func:`initialize` with the flags of :func:`add_distributed_args`."""
  initialize(args.coordinator_address, args.num_processes, args.process_id,
             args.distributed_timeout)


# JAX's own wait outlasts ours by this much, so that the watchdog speaks first.
JAX_GRACE_S = 30


def _exit_unless_joined(where: str, num_processes: int | None, process_id: int | None,
                        timeout_s: float) -> threading.Timer:
  """A started timer that ends the process with one line on stderr (exit status 1) unless
  cancelled within ``timeout_s``.

  When not every process joins in time (a process not started, a wrong --num_processes), JAX
  aborts the whole process with a fatal error and a C++ stack trace, which no Python code can
  catch; it is given ``JAX_GRACE_S`` more, and this timer ends the process first. Nothing has
  been computed or written at that point (initialisation comes before the run directory)."""
  count = f'all {num_processes}' if num_processes else 'all the'
  me = f' (this is process {process_id})' if process_id is not None else ''

  def give_up() -> None:
    print(f'error: not {count} processes joined through {where} within {timeout_s} s{me}; '
          'start every process with the same --coordinator_address and --num_processes, or '
          'raise --distributed_timeout', file=sys.stderr, flush=True)
    os._exit(1)

  timer = threading.Timer(timeout_s, give_up)
  timer.daemon = True
  timer.start()
  return timer


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Polls ``HOST:PORT`` until it accepts a TCP connection, or raises DistributedError.

  JAX's own client aborts the whole process (a fatal error with a C++ stack trace) when the
  coordinator cannot be reached in time; this check turns that case into a one-line error.
  """
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit():
    raise DistributedError(f'--coordinator_address must be HOST:PORT, got {address!r}')
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip('[]'), int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(f'coordinator {address} unreachable for {timeout_s} s '
                               f'({e.strerror or type(e).__name__}); start process 0 first, '
                               'and check the address and port') from e
      time.sleep(0.5)


def data_mesh(devices: Any = None) -> Mesh:
  """A one-axis (``'data'``) mesh over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the ``'data'`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def num_replicas(mesh: Mesh | None) -> int:
  """How many devices a batch is split over."""
  return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def local_batch_size(global_batch_size: int, mesh: Mesh | None) -> int:
  """The images this process loads per step (its devices' share of the global batch)."""
  replicas = num_replicas(mesh)
  if global_batch_size % replicas:
    raise ValueError(f'train.batch_size {global_batch_size} is not divisible by the '
                     f'{replicas} devices the batch is split over')
  if mesh is None:
    return global_batch_size
  local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  return global_batch_size // replicas * local


def shard_batch(local_batch: dict, mesh: Mesh | None) -> dict:
  """This process's slice of the batch -> global arrays sharded along ``'data'``."""
  if mesh is None:
    return local_batch
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicate(tree: Any, mesh: Mesh | None) -> Any:
  """Host or device values (identical on every process) -> arrays replicated over the mesh."""
  if mesh is None:
    return tree
  sharding = replicated(mesh)

  def put(x):
    value = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree_util.tree_map(put, tree)
