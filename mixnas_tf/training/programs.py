"""Compiled programs, one per static configuration, with a bound on how many stay alive."""

import collections
import functools
import threading

import tensorflow as tf

from mixnas_tf.training import distribute

# The TF process crashed (segfault) after ~150 live XLA-compiled functions (BUILD_NOTES.md);
# a search of a large space keeps fewer than this many alive.
DEFAULT_MAX_LIVE_PROGRAMS = 96


class Programs:
  """One compiled function per static configuration, at most `max_live` alive (LRU).

  A configuration fixes every shape of a step, so each is its own program (trace and,
  with XLA, compilation). Keeping all of them alive does not scale to hundreds of
  configurations; the least recently used ones are dropped and compiled again on their
  next use (XLA's persistent cache, when set, makes that a cache read).

  With a tf.distribute strategy, a program runs `fn` on every replica (`strategy.run`)
  with the batch arguments split across them (distribute.py), and returns the first
  replica's outputs (the step all-reduces what it returns).

  Args:
    fn: the step, fn(config, *tensors).
    jit_compile: compile with XLA.
    max_live: how many programs stay alive.
    strategy: a tf.distribute strategy, or None (one device).
  """

  def __init__(self, fn, jit_compile: bool, max_live: int, strategy=None):
    if max_live < 1:
      raise ValueError(f"max_live must be >= 1. Received: max_live={max_live}")
    if strategy is not None and jit_compile:
      raise ValueError("a program under a tf.distribute strategy runs in graph mode "
                       "(distribute.py); received jit_compile=True")
    self._fn, self._jit_compile, self.max_live = fn, bool(jit_compile), int(max_live)
    self._strategy = strategy
    self._live: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()  # Trainer.compile_ahead calls programs from threads.
    self.traces = 0
    self.evictions = 0

  def _program(self, config):
    key = tuple(config)
    with self._lock:
      program = self._live.pop(key, None)
      if program is None:
        fn = functools.partial(self._fn, key)
        if self._strategy is not None:
          fn = functools.partial(_replicated, self._strategy, fn)
        program = tf.function(fn, jit_compile=self._jit_compile)
      self._live[key] = program
      if len(self._live) > self.max_live:
        self._live.popitem(last=False)
        self.evictions += 1
    return program

  def __call__(self, config, *args):
    program = self._program(config)
    if self._strategy is not None:
      args = distribute.split(self._strategy, args)
    before = program.experimental_get_tracing_count()
    out = program(*args)
    self.traces += program.experimental_get_tracing_count() - before
    return out

  def trace(self, config, *specs) -> None:
    """Traces `config`'s program for arguments like `specs` (tf.TensorSpec), without
    running it.

    XLA's persistent cache keys a program by its function's name, which carries a
    process-wide trace counter: tracing every configuration first, in one fixed order,
    gives each the same name in every run of the same settings (another seed, a resume),
    so the cache serves them (BUILD_NOTES.md).
    """
    program = self._program(config)
    before = program.experimental_get_tracing_count()
    program.get_concrete_function(*specs)
    self.traces += program.experimental_get_tracing_count() - before

  @property
  def live(self) -> int:
    return len(self._live)


def _replicated(strategy, fn, *args):
  return distribute.first_replica(strategy, strategy.run(fn, args=args))
