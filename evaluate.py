"""Evaluate YOLACT: a thin wrapper over ``yolact-jax evaluate`` (:mod:`yolact_jax.cli.evaluate`).

Run ``python evaluate.py --help`` for the flags.
"""

import pathlib
import sys

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent
if str(PROJECT_ROOT) not in sys.path:  # run from a checkout without installing
  sys.path.insert(0, str(PROJECT_ROOT))

from yolact_jax.cli.evaluate import *  # noqa: E402,F401,F403  (its helpers, for importers)
from yolact_jax.cli.evaluate import main  # noqa: E402

if __name__ == '__main__':
  sys.exit(main())
