"""The README opens with the two commands and .ci/run runs the second one verbatim; every command
that the README and docs/*.md show parses with its own parser (no drift after renames)."""

import argparse
import dataclasses
import importlib
import pathlib
import re
import shlex
import typing

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
CHAIN = {'&&', '||', ';', '|'}  # shell operators between commands on one line


def bash_blocks(path: pathlib.Path) -> list[str]:
  return re.findall(r'```bash\n(.*?)\n```', path.read_text(), re.S)


def test_readme_commands_and_ci_agree():
  blocks = bash_blocks(ROOT / 'README.md')
  setup_and_run, setup_and_test = blocks[0].strip(), blocks[1].strip()
  assert setup_and_run.startswith('python3.11 -m venv .venv')
  assert setup_and_test.endswith('-m pytest -q -n 2 --dist loadfile')
  assert setup_and_test in (ROOT / '.ci' / 'run').read_text().splitlines()


def test_the_readme_is_a_front_page():
  """At most 200 lines: everything else lives in docs/ (README, Documentation)."""
  assert len((ROOT / 'README.md').read_text().splitlines()) <= 200


def _is_python(word: str) -> bool:
  return re.fullmatch(r'python(3(\.\d+)?)?', pathlib.PurePath(word).name) is not None


def classify(words: list[str]) -> tuple[str, str, list[str]] | None:
  """``('cli', command, argv)`` for ``yolact-jax <command> ...`` and ``python -m yolact_jax
  <command> ...``, ``('script', 'scripts/x.py', argv)`` for ``python scripts/x.py ...``,
  ``('pytest', '', argv)`` for ``python -m pytest ...``; None for anything else."""
  if len(words) >= 2 and words[0] == 'yolact-jax':
    return 'cli', words[1], words[2:]
  if len(words) >= 2 and _is_python(words[0]):
    if words[1] == '-m' and len(words) >= 4 and words[2] == 'yolact_jax':
      return 'cli', words[3], words[4:]
    if words[1] == '-m' and len(words) >= 3 and words[2] == 'pytest':
      return 'pytest', '', words[3:]
    if words[1].startswith('scripts/') and words[1].endswith('.py'):
      return 'script', words[1], words[2:]
  return None


def page_commands(path: pathlib.Path) -> list[tuple[str, str, str, list[str]]]:
  """Every command of a page's bash blocks as (line, kind, name, argv): continuations joined,
  comments dropped, a line split at ``&&``, ``;`` and pipes."""
  commands = []
  for block in bash_blocks(path):
    for line in block.replace('\\\n', ' ').splitlines():
      words, segment = shlex.split(line, comments=True), []
      for word in words + ['&&']:
        if word in CHAIN:
          found = classify(segment)
          if found:
            commands.append((line.strip(), *found))
          segment = []
        else:
          segment.append(word)
  return commands


ALL_COMMANDS = [(path.relative_to(ROOT).as_posix(), *command)
                for path in PAGES for command in page_commands(path)]


class _Built(Exception):
  def __init__(self, parser):
    super().__init__('parser built')
    self.parser = parser


def cli_parser(command: str) -> argparse.ArgumentParser:
  from yolact_jax.cli import COMMANDS
  assert command in COMMANDS, f'no command {command!r}'
  return importlib.import_module(f'yolact_jax.cli.{COMMANDS[command][0]}').build_parser()


def script_parser(script: str, monkeypatch) -> argparse.ArgumentParser:
  """The parser that ``scripts/<x>.py`` uses, without running the script: a thin wrapper over a
  command uses that command's ``build_parser()``; a script that builds its parser inside
  ``parse_args()`` or ``main()`` is stopped at its first parse and the parser kept."""
  assert (ROOT / script).is_file(), f'{script} does not exist'
  module = importlib.import_module(script[:-len('.py')].replace('/', '.'))
  main_module = getattr(getattr(module, 'main', None), '__module__', '')
  if main_module.startswith('yolact_jax.cli.'):
    return importlib.import_module(main_module).build_parser()

  def stop(self, args=None, namespace=None):
    raise _Built(self)

  with monkeypatch.context() as patch:
    patch.setattr(argparse.ArgumentParser, 'parse_known_args', stop)
    try:
      (getattr(module, 'parse_args', None) or module.main)([])
    except _Built as built:
      return built.parser
  raise AssertionError(f'{script} built no parser')


def command_parser(kind: str, name: str, monkeypatch) -> argparse.ArgumentParser:
  return cli_parser(name) if kind == 'cli' else script_parser(name, monkeypatch)


def older_spellings(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
  """The flags of ``argv`` that are not the current spelling: unknown, dashed where the parser
  defines the underscored name (``cli.common.Parser`` still reads those), or hidden aliases
  (``help=SUPPRESS``, the spellings kept for one release)."""
  options, old = parser._option_string_actions, []
  for arg in argv:
    flag = arg.split('=', 1)[0]
    if not flag.startswith('--') or flag.startswith('--config.'):
      continue
    action = options.get(flag)
    if action is None or action.help == argparse.SUPPRESS:
      old.append(flag)
  return old


def test_the_pages_show_the_main_commands():
  names = {(kind, name) for _, _, kind, name, _ in ALL_COMMANDS}
  for command in ('train', 'evaluate', 'predict', 'export', 'convert', 'benchmark', 'compare'):
    assert ('cli', command) in names, command
  for script in ('demo', 'make_synthetic', 'prepare_tfds', 'gpu_check', 'benchmark_loader'):
    assert ('script', f'scripts/{script}.py') in names, script


@pytest.mark.parametrize('page, line, kind, name, argv', ALL_COMMANDS,
                         ids=[f'{c[0]}:{c[3]}:{i}' for i, c in enumerate(ALL_COMMANDS)])
def test_page_command_parses(page, line, kind, name, argv, monkeypatch):
  """Each command's flags exist (its own parser accepts the line), and its ``--config.x=y``
  overrides name config fields and hold legal values (applied to the preset it names)."""
  from yolact_jax.config import load_config
  monkeypatch.chdir(ROOT)
  where = f'{page}: {line}'
  if kind == 'pytest':
    for arg in argv:
      if arg.startswith('tests/'):
        assert (ROOT / arg.split('::')[0]).is_file(), f'{where}: no {arg}'
    return
  parser = command_parser(kind, name, monkeypatch)
  try:
    namespace, extra = parser.parse_known_args(argv)
  except SystemExit as e:
    pytest.fail(f'{where}: the parser refused it (exit {e.code}; its message is above)')
  overrides = [a for a in extra if a.startswith('--config.')]
  assert extra == overrides, f'{where}: unknown arguments {extra}'
  assert not older_spellings(parser, argv), f'{where}: use the current spelling of ' \
      f'{older_spellings(parser, argv)} (its --help lists them)'
  if overrides:
    spec = getattr(namespace, 'config', None) or 'yolact_base'
    load_config(spec, overrides)  # a ConfigError names the field


def config_field_exists(path: str) -> bool:
  """Whether ``a.b.c`` is a leaf field of the config schema."""
  from yolact_jax.config import YolactConfig
  node = YolactConfig
  for key in path.split('.'):
    if not dataclasses.is_dataclass(node) or key not in {f.name for f in dataclasses.fields(node)}:
      return False
    node = typing.get_type_hints(node)[key]
  return not dataclasses.is_dataclass(node)


# Spellings of the layout before the config's model section that docs/cli.md shows on purpose,
# to say that they are an error naming the new place.
OLD_SPELLINGS_SHOWN = {'backbone.pred_scales'}


def test_config_fields_named_in_the_pages_exist():
  """Every ``--config.a.b`` in the pages' text names a leaf field of the config schema."""
  for path in PAGES:
    for match in re.finditer(r'--config\.([A-Za-z_][\w.]*[A-Za-z_\d])', path.read_text()):
      field = match.group(1)
      assert config_field_exists(field) or field in OLD_SPELLINGS_SHOWN, (path.name, field)


def inline_commands(path: pathlib.Path) -> list[tuple[str, str, str, list[str]]]:
  """The ``yolact-jax ...`` and ``python scripts/x.py ...`` spans of a page's text (not code
  blocks) without placeholders: (span, kind, name, argv)."""
  text = re.sub(r'```.*?```', '', path.read_text(), flags=re.S)
  spans = []
  for span in re.findall(r'`((?:yolact-jax|python scripts/)[^`]*)`', text):
    if not re.search(r'[<|]|\.\.\.', span):
      found = classify(shlex.split(span))
      if found:
        spans.append((span, *found))
  return spans


def test_inline_commands_use_existing_flags(monkeypatch):
  """The commands quoted in the text name existing commands and flags (a full parse would need
  every required flag, which a quoted fragment leaves out)."""
  monkeypatch.chdir(ROOT)
  for path in PAGES:
    for span, kind, name, argv in inline_commands(path):
      if kind == 'pytest':
        continue
      old = older_spellings(command_parser(kind, name, monkeypatch), argv)
      assert not old, (path.name, span, old)


# --------------------------------------------------------------------------------------------
# Links and the results they cite


def slug(heading: str) -> str:
  """GitHub's anchor of a markdown heading."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_links_between_pages_resolve():
  """Every relative link of the pages names a file that exists, and its #anchor a heading."""
  for path in PAGES + [ROOT / 'CHANGELOG.md']:
    text = re.sub(r'```.*?```', '', path.read_text(), flags=re.S)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if re.match(r'[a-z]+:', target):
        continue
      file, _, anchor = target.partition('#')
      linked = (path.parent / file).resolve() if file else path
      assert linked.exists(), (path.name, target)
      if anchor and linked.suffix == '.md':
        headings = re.findall(r'^#+ (.*)$', linked.read_text(), re.M)
        assert anchor in {slug(h) for h in headings}, (path.name, target)
    for mentioned in re.findall(r'(?<![\w/])docs/[\w.-]+\.(?:md|png|jpg)', text):
      assert (ROOT / mentioned).is_file(), (path.name, mentioned)


# A measurement file cited by name: results/<name>, with <placeholders>, * and {a,b} patterns.
RESULTS_CITATION = re.compile(r'results/(?:benchmark_cpu|compare_|demo_|loader_|onnx_profile_'
                              r'|train_step_options_|train_step_breakdown_|cost_curves)'
                              r'[\w./<>{},*-]*')


def cited_results() -> set[pathlib.Path]:
  cited = set()
  for path in PAGES:
    for citation in RESULTS_CITATION.findall(path.read_text()):
      citation = citation.rstrip('.,')
      braces = re.search(r'\{([^}]*)\}', citation)
      for choice in (braces.group(1).split(',') if braces else ['']):
        name = citation.replace(braces.group(0), choice) if braces else citation
        found = set(ROOT.glob(re.sub(r'<[^>]*>', '*', name)))
        assert found, (path.name, citation)
        if '*' not in name:  # a bare wildcard (results/compare_pytorch_*.md) cites no file
          cited |= found
  return cited


def test_every_results_file_is_cited_and_every_citation_exists():
  """The pages cite results files that exist (cited_results), and results/ holds only files a
  page cites (a .json and the .md beside it count as one)."""
  stems = {p.with_suffix('') for p in cited_results()}
  for file in (ROOT / 'results').rglob('*'):
    if file.is_file():
      assert file.with_suffix('') in stems, f'{file.relative_to(ROOT)} is cited by no page'
