"""One process of the PeerWatch tests (``python -m tests.peer_watch_worker``), without JAX's
distributed runtime: process 0 listens on PORT, the others connect to it.

  python -m tests.peer_watch_worker PORT NUM_PROCESSES ID TIMEOUT_S MODE

MODE: ``wait`` prints READY and sleeps (a peer may be stopped or killed meanwhile); ``barrier:S``
sleeps S seconds, then meets the others in a barrier bounded by 3 x TIMEOUT_S and prints PASSED.
"""

import socket
import sys
import time

from yolact_jax import parallel


def main(port, num_processes, process_id, timeout_s, mode):
  listener = socket.create_server(('127.0.0.1', port)) if process_id == 0 else None
  watch = parallel.PeerWatch(process_id, num_processes, timeout_s, listener=listener,
                             address=('127.0.0.1', port))
  parallel.set_failure_note(lambda: 'nothing to resume in this test')
  print('READY', flush=True)
  if mode == 'wait':
    time.sleep(600)
  else:
    time.sleep(float(mode.split(':')[1]))
    watch.barrier('end', 3 * timeout_s)
    watch.close()
    print('PASSED', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
