"""``python -m yolact_jax <command> ...``: the ``yolact-jax`` command line."""

import sys

from yolact_jax.cli import main

if __name__ == '__main__':
  sys.exit(main())
