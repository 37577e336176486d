"""``--host_memory``: with ``keep`` a freed large block is reused without page faults; with
``release`` (glibc's defaults) every new large block faults in each of its pages again.

Each case runs in a fresh interpreter: the setting is process-wide and binds threads when they
first allocate.
"""

import subprocess
import sys
import textwrap

import pytest

from yolact_jax import host_memory

PAGES = 65536  # a 256 MiB block in 4 KiB pages

glibc_only = pytest.mark.skipif(not host_memory.available(),
                                reason='host memory modes act on glibc malloc only')

# Parses the command line as every yolact-jax command does, then counts the page faults of
# writing a fresh 256 MiB malloc block after a block of the same size was written and freed
# (malloc itself: numpy would ask the kernel for huge pages).
_SCRIPT = textwrap.dedent('''
    import ctypes, resource, sys
    from yolact_jax import host_memory
    from yolact_jax.cli.common import Parser
    Parser(prog='t').parse_args(sys.argv[1:])
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 256 * 2**20
    def faults():
      return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = libc.malloc(size); ctypes.memset(a, 1, size); libc.free(a)
    before = faults()
    b = libc.malloc(size); ctypes.memset(b, 2, size)
    value = ctypes.string_at(b + size - 1, 1)[0]
    print(host_memory.mode(), faults() - before, value)
''')


def _run(*flags: str) -> tuple[str, int, int]:
  out = subprocess.run([sys.executable, '-c', _SCRIPT, *flags], capture_output=True, text=True,
                       timeout=120, check=True).stdout.split()
  return out[0], int(out[1]), int(out[2])


@glibc_only
def test_keep_reuses_freed_blocks_without_page_faults():
  mode, faults, last_byte = _run()  # keep is the default
  assert mode == 'keep'
  assert last_byte == 2  # the reused block holds the new values
  assert faults < PAGES // 20  # the block comes back from the heap, not from the kernel


@glibc_only
def test_release_leaves_glibc_defaults_which_fault_every_page():
  mode, faults, _ = _run('--host_memory', 'release')
  assert mode == 'release'
  assert faults >= PAGES * 0.9  # a fresh mmap: one fault per 4 KiB page


def test_unknown_mode_is_a_one_line_error(capsys):
  with pytest.raises(ValueError, match="one of keep, release, not 'forever'"):
    host_memory.apply('forever')
  from yolact_jax.cli.common import Parser
  with pytest.raises(SystemExit) as exit_:
    Parser(prog='t').parse_args(['--host_memory', 'forever'])
  assert exit_.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith('t: error:') and '--host_memory' in error and "'forever'" in error
