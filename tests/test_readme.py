"""The README opens with the two commands, and .ci/run runs the second one verbatim."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_commands_and_ci_agree():
  blocks = re.findall(r'```bash\n(.*?)\n```', (ROOT / 'README.md').read_text(), re.S)
  setup_and_run, setup_and_test = blocks[0].strip(), blocks[1].strip()
  assert setup_and_run.startswith('python3.11 -m venv .venv')
  assert setup_and_test.endswith('-m pytest -q')
  assert setup_and_test in (ROOT / '.ci' / 'run').read_text().splitlines()
