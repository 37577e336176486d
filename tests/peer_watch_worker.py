"""One process of the PeerWatch tests (``python -m tests.peer_watch_worker``), without JAX's
distributed runtime: process 0 listens on PORT, the others connect to it.

  python -m tests.peer_watch_worker PORT NUM_PROCESSES ID TIMEOUT_S MODE

MODE: ``wait`` prints READY and sleeps (a peer may be stopped or killed meanwhile); ``wait:S``
the same, with a first failure note that takes S seconds to make (a later cause, such as a peer
told of the loss that has ended, would be reported before it); ``barrier:S`` sleeps S seconds, then meets the others in a barrier
bounded by 3 x TIMEOUT_S and prints PASSED.
"""

import socket
import sys
import time

from yolact_jax import parallel


def main(port, num_processes, process_id, timeout_s, mode):
  listener = socket.create_server(('127.0.0.1', port)) if process_id == 0 else None
  watch = parallel.PeerWatch(process_id, num_processes, timeout_s, listener=listener,
                             address=('127.0.0.1', port))
  kind, _, seconds = mode.partition(':')
  slow = [float(seconds)] if kind == 'wait' and seconds else [0.0]

  def note():  # the first note takes ``slow`` seconds: a later cause would be reported first
    time.sleep(slow.pop() if slow else 0)
    return 'nothing to resume in this test'

  parallel.set_failure_note(note)
  print('READY', flush=True)
  if kind == 'wait':
    time.sleep(600)
  else:
    time.sleep(float(seconds))
    watch.barrier('end', 3 * timeout_s)
    watch.close()
    print('PASSED', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
