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


def readme_cli_commands():
  """Every ``yolact-jax <command> ...`` line of the README's bash blocks (continuations joined,
  comments dropped) as (command, argv)."""
  import shlex
  commands = []
  for block in re.findall(r'```bash\n(.*?)\n```', (ROOT / 'README.md').read_text(), re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      if line.startswith('yolact-jax '):
        words = shlex.split(line, comments=True)
        commands.append((words[1], words[2:]))
  return commands


def test_readme_command_lines_parse():
  """The README's yolact-jax examples use flags the commands have (no drift after renames)."""
  import importlib
  commands = readme_cli_commands()
  assert {name for name, _ in commands} >= {'train', 'evaluate', 'predict'}
  for name, argv in commands:
    parser = importlib.import_module(f'yolact_jax.cli.{name}').build_parser()
    _, extra = parser.parse_known_args(argv)
    assert all(a.startswith('--config.') for a in extra), (name, argv, extra)
