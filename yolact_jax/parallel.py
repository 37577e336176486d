"""Data parallelism over devices and hosts on JAX's own runtime (``jax.sharding`` +
``jax.distributed``).

One ``Mesh`` with a single ``'data'`` axis spans every device of every process. A training batch
is sharded along that axis (each process contributes the images it loaded: its slice of the
global batch), the model's variables and the optimiser state are replicated, and one ``jax.jit``
program with those shardings runs on 1 or N devices; XLA inserts the gradient all-reduce.

Processes join through :func:`initialize` (an explicit coordinator, cluster auto-detection, or
neither: one process; on CPU the collectives go over gloo). A failure is one line and an exit,
never a hang or JAX's abort with a C++ stack trace: joining is bounded by ``timeout_s``, and once
joined the processes watch each other (:class:`PeerWatch`), so a lost one ends every other within
seconds, saying what is left to resume from (:func:`set_failure_note`). At exit they meet in a
bounded final barrier and shut JAX's runtime down together (:func:`finish`).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Callable

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
               process_id: int | None = None, timeout_s: int = 120,
               peer_timeout_s: float = 30, shutdown_timeout_s: int = 300) -> None:
  """Joins this process to the others; a no-op for one process.

  With ``coordinator_address`` all three must be given; without it, a cluster environment
  (SLURM, Open MPI, ...) is auto-detected by ``jax.distributed.initialize()``, and otherwise the
  run is one process. Must be called before JAX's backends start (before any computation).
  ``peer_timeout_s``: a process silent this long is taken for lost (:class:`PeerWatch`).
  ``shutdown_timeout_s``: JAX's own shutdown barrier (reached together after :func:`finish`).
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
    jax.distributed.initialize(initialization_timeout=timeout_s + JAX_GRACE_S,
                               shutdown_timeout_seconds=shutdown_timeout_s, **kwargs)
  except Exception as e:  # jax raises several types (XlaRuntimeError, ValueError, ...)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(f'could not join the processes through {where} within '
                           f'{timeout_s} s ({type(e).__name__}: {first})') from e
  finally:
    watchdog.cancel()
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_count() > 1:
    _start_peer_watch(coordinator_address, peer_timeout_s)


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
                     help='seconds to wait for the other processes to join (default 120)')
  group.add_argument('--peer_timeout', type=float, default=30,
                     help='seconds without a sign of life after which a process is taken for '
                          'lost and every other one stops (default 30)')


def initialize_from_args(args: Any) -> None:
  """:func:`initialize` with the flags of :func:`add_distributed_args`."""
  initialize(args.coordinator_address, args.num_processes, args.process_id,
             args.distributed_timeout, args.peer_timeout)


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


# --------------------------------------------------------------------------- lost processes

PEER_LOST_EXIT = 1  # exit status of a process that stops because another one was lost
FINISH_TIMEOUT_S = 3600  # the final barrier's bound (a live process may finish much later)
_HEARTBEAT_S = 1.0
_watch: 'PeerWatch | None' = None
_failure_note: Callable[[], str] | None = None


def set_failure_note(note: Callable[[], str] | None) -> None:
  """What a process stopped by a lost peer says is left (e.g. the newest checkpoint); the
  trainer sets it while it runs."""
  global _failure_note
  _failure_note = note


def _note() -> str:
  try:
    return f'; {_failure_note()}' if _failure_note is not None else ''
  except Exception:  # noqa: BLE001 - the note must never hide the failure
    return ''


# Held by the one thread that ends the process (_claim_stop): the first cause found is the one
# reported, however the threads that notice later ones (a peer stopping in turn) are scheduled.
_STOPPING = threading.RLock()


def _claim_stop() -> None:
  """Returns in the first thread that claims the stop (and again in that thread); any other
  thread waits here until that one has ended the process."""
  if not _STOPPING.acquire(blocking=False):
    threading.Event().wait()


def _stop(message: str) -> None:
  """One line on stderr and exit status PEER_LOST_EXIT, at once: JAX's runtime is unusable once
  a process is gone, and its shutdown would wait for the lost one."""
  _claim_stop()
  print(f'error: {message}{_note()}', file=sys.stderr, flush=True)
  os._exit(PEER_LOST_EXIT)  # pylint: disable=protected-access


class PeerWatch:
  """Heartbeats between the processes of a run, in a star around process 0.

  Each process sends a byte every second over its own TCP connection (process 0 to each other,
  each other to 0). End of file before a goodbye, or ``timeout_s`` of silence, means the
  peer is lost: process 0 tells the others which one, then every process stops with one line
  (:func:`_stop`). :meth:`barrier` is a bounded barrier over the same connections; :meth:`close`
  says goodbye, after which a peer's end of file is expected.
  """

  def __init__(self, process_id: int, num_processes: int, timeout_s: float,
               listener: socket.socket | None = None, address: tuple[str, int] | None = None):
    """Process 0 passes its ``listener`` (a bound server socket), every other process the
    ``address`` of process 0's; connecting waits at most ``max(timeout_s, 10)`` s."""
    self.process_id, self.num_processes, self.timeout_s = process_id, num_processes, timeout_s
    self.closing = False
    self._changed = threading.Condition()
    self._arrived: dict[str, set[int]] = {}
    self._released: set[str] = set()
    self._peers: dict[int, socket.socket] = {}
    self._heard: dict[int, float] = {}
    self._said_bye: set[int] = set()
    deadline = time.monotonic() + max(timeout_s, 10)
    if process_id == 0:
      with listener:
        while len(self._peers) < num_processes - 1:
          peer, conn = _accept_peer(listener, num_processes, deadline)
          if peer is None:
            conn.close()
            continue
          if peer in self._peers:  # it retried: the newer connection is the live one
            self._peers[peer].close()
          self._add(peer, conn)
    else:
      self._add(0, _connect_to_watch(*address, process_id, deadline))
    for target in (self._beat, self._check_silence):
      threading.Thread(target=target, daemon=True).start()
    for peer, conn in self._peers.items():
      threading.Thread(target=self._listen, args=(peer, conn), daemon=True).start()

  def _add(self, peer: int, conn: socket.socket) -> None:
    conn.settimeout(None)
    self._peers[peer] = conn
    self._heard[peer] = time.monotonic()

  def _send(self, conn: socket.socket, text: str) -> None:
    try:
      conn.sendall(text.encode())
    except OSError:
      pass  # the listener sees the loss

  def _beat(self) -> None:
    while not self.closing:
      for conn in list(self._peers.values()):
        self._send(conn, '.')
      time.sleep(_HEARTBEAT_S)

  def _check_silence(self) -> None:
    while not self.closing:
      time.sleep(_HEARTBEAT_S)
      for peer, heard in list(self._heard.items()):
        if (not self.closing and peer not in self._said_bye
            and time.monotonic() - heard > self.timeout_s):
          self._lost(peer, f'no sign of life for {self.timeout_s:g} s')

  def _listen(self, peer: int, conn: socket.socket) -> None:
    buffer = b''
    while True:
      try:
        chunk = conn.recv(4096)
      except OSError:
        chunk = b''
      if not chunk:
        if not (self.closing or peer in self._said_bye):
          self._lost(peer, 'its connection closed: the process ended or was killed')
        return
      self._heard[peer] = time.monotonic()
      buffer += chunk.replace(b'.', b'')
      while b'\n' in buffer:
        line, buffer = buffer.split(b'\n', 1)
        self._message(peer, line.decode())

  def _message(self, peer: int, line: str) -> None:
    kind, _, rest = line.partition(' ')
    if kind == 'BYE':
      self._said_bye.add(peer)
    elif kind == 'LOST':  # from process 0: another process is gone
      lost, _, how = rest.partition(' ')
      self._stop_for(int(lost), how)
    elif kind == 'ARRIVED':  # process 0 counts a barrier
      self._arrive(rest, peer)
    elif kind == 'RELEASE':  # from process 0: everybody arrived
      with self._changed:
        self._released.add(rest)
        self._changed.notify_all()

  def _lost(self, peer: int, how: str) -> None:
    _claim_stop()  # before telling the others: a peer told may end first, and its end of file
    # must not become the reported cause here
    if self.process_id == 0:  # tell the others who is gone before stopping
      for other, conn in self._peers.items():
        if other != peer:
          self._send(conn, f'LOST {peer} {how}\n')
    self._stop_for(peer, how)

  def _stop_for(self, peer: int, how: str) -> None:
    _stop(f'lost process {peer} of {self.num_processes} ({how}); this is process '
          f'{self.process_id}, stopping too')

  def _arrive(self, name: str, peer: int) -> None:
    with self._changed:
      arrived = self._arrived.setdefault(name, set())
      arrived.add(peer)
      if len(arrived) == self.num_processes:
        for conn in self._peers.values():
          self._send(conn, f'RELEASE {name}\n')
        self._released.add(name)
      self._changed.notify_all()

  def barrier(self, name: str, timeout_s: float) -> None:
    """Waits until every process called ``barrier(name)``; one line and exit after
    ``timeout_s`` (a lost process ends the wait at once, through the watch)."""
    if self.process_id == 0:
      self._arrive(name, 0)
    else:
      self._send(self._peers[0], f'ARRIVED {name}\n')
    with self._changed:
      if not self._changed.wait_for(lambda: name in self._released, timeout=timeout_s):
        waiting = sorted(set(range(self.num_processes)) - self._arrived.get(name, set()))
        who = f'processes {waiting}' if self.process_id == 0 else 'the other processes'
        _stop(f'{who} did not reach the end of the run within {timeout_s:g} s of process '
              f'{self.process_id}')

  def close(self) -> None:
    """Goodbye to every peer: from now on their end of file is expected."""
    self.closing = True
    for conn in self._peers.values():
      self._send(conn, 'BYE\n')


_HELLO = 'yolact-jax watch'  # the first line a process sends: this, then its id


def _read_line(conn: socket.socket, limit: int = 128) -> str:
  data = b''
  while not data.endswith(b'\n') and len(data) < limit:
    chunk = conn.recv(1)
    if not chunk:
      break
    data += chunk
  return data.decode(errors='replace').strip()


def _accept_peer(listener: socket.socket, num_processes: int, deadline: float
                 ) -> tuple[int | None, socket.socket | None]:
  """One connection to process 0's watch and the process id it says hello with (None: not one
  of ours, e.g. a port scan: the caller closes it)."""
  listener.settimeout(max(deadline - time.monotonic(), 0.1))
  try:
    conn, _ = listener.accept()
  except OSError as e:  # socket.timeout included
    raise DistributedError(f'the other processes did not connect to the watch of process 0 '
                           f'({e.strerror or type(e).__name__})') from e
  try:
    conn.settimeout(5)
    kind, _, peer = _read_line(conn).rpartition(' ')
    if kind != _HELLO or not peer.isdigit() or not 0 < int(peer) < num_processes:
      return None, conn
    conn.sendall(b'OK\n')
    return int(peer), conn
  except OSError:
    return None, conn


def _connect_to_watch(host: str, port: int, process_id: int, deadline: float
                      ) -> socket.socket:
  """This process's connection to process 0's watch, acknowledged (retried until
  ``deadline``)."""
  while True:
    try:
      conn = socket.create_connection((host, port), timeout=5)
      try:
        conn.sendall(f'{_HELLO} {process_id}\n'.encode())
        if _read_line(conn) == 'OK':
          return conn
      except OSError:
        pass
      conn.close()
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(f'cannot reach the watch of process 0 at {host}:{port} '
                               f'({e.strerror or type(e).__name__})') from e
    if time.monotonic() >= deadline:
      raise DistributedError(f'the watch of process 0 at {host}:{port} did not answer')
    time.sleep(0.5)


def _broadcast_port(port: int) -> int:
  """Process 0's listening port, to every process (a collective over JAX's runtime)."""
  from jax.experimental import multihost_utils
  return int(multihost_utils.broadcast_one_to_all(np.int32(port)))


def _start_peer_watch(coordinator_address: str | None, timeout_s: float) -> None:
  """Process 0 listens beside the coordinator's host and tells the others its port."""
  global _watch
  if not coordinator_address:
    log.info('no coordinator address given: processes are not watched for losses')
    return
  host = coordinator_address.rpartition(':')[0].strip('[]')
  listener = socket.create_server((host, 0)) if jax.process_index() == 0 else None
  port = _broadcast_port(listener.getsockname()[1] if listener is not None else 0)
  _watch = PeerWatch(jax.process_index(), jax.process_count(), timeout_s, listener=listener,
                     address=(host, port))
  atexit.register(finish)


def finish(timeout_s: float = FINISH_TIMEOUT_S) -> None:
  """The processes' last meeting: a bounded barrier, then JAX's runtime shut down together (run
  at exit; a no-op for one process or when already finished). A process may finish long after
  the others, e.g. process 0 running COCOeval."""
  global _watch
  if _watch is None:
    return
  watch, _watch = _watch, None
  watch.barrier('finish', timeout_s)
  watch.close()
  jax.distributed.shutdown()


_COLLECTIVE_FAILURE = ('Gloo', 'gloo', 'NCCL', 'collective', 'Connection reset', 'UNAVAILABLE',
                       'DEADLINE_EXCEEDED', 'coordination service', 'barrier')


def exit_if_collective_failed(error: BaseException, grace_s: float = 10) -> None:
  """Called with an exception from the body of a multi-process run: when another process is
  gone, the watch ends this one within ``grace_s`` (one line, naming it); after that, a failed
  collective ends it with the error's own first line. Returns for one process and for errors
  that are not a failed collective (JAX raises these as XlaRuntimeError or ValueError)."""
  text = str(error)
  if _watch is None or not any(word in text for word in _COLLECTIVE_FAILURE):
    return
  deadline = time.monotonic() + grace_s
  while time.monotonic() < deadline:
    time.sleep(0.1)  # the watch's threads name the lost process and exit
  first = text.strip().splitlines()[0]
  _stop(f'a collective operation failed on process {jax.process_index()} ({first[:200]})')


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


def local_batch_rows(global_batch_size: int, mesh: Mesh | None) -> tuple[int, int]:
  """``(first, stop)``: the rows of the global batch that this process's devices hold (the
  images it loads per step); all of them without a mesh."""
  replicas = num_replicas(mesh)
  if global_batch_size % replicas:
    raise ValueError(f'train.batch_size {global_batch_size} is not divisible by the '
                     f'{replicas} devices the batch is split over')
  if mesh is None:
    return 0, global_batch_size
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  starts = sorted({s[0].start or 0 for s in index_map.values()})
  per_device = global_batch_size // replicas
  if starts != list(range(starts[0], starts[0] + per_device * len(starts), per_device)):
    raise ValueError(f'the devices of process {jax.process_index()} hold rows {starts} of the '
                     'batch, not one contiguous slice: order the mesh by process')
  return starts[0], starts[0] + per_device * len(starts)


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
