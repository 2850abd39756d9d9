"""Run-time settings of a training process: precision, seeds, op determinism."""

import contextlib

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from mixnas_tf import errors

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def set_precision(precision: str) -> None:
  """Sets Keras' global dtype policy; call before building the model."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}. "
                     f"Received: precision={precision!r}")
  keras.mixed_precision.set_global_policy(precision)


def set_seeds(seed: int) -> None:
  """Seeds Python, numpy and TF (initialisation)."""
  keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def op_determinism(enabled: bool):
  """TF op determinism for the duration of one run, then as it was before.

  `tf.config.experimental.enable_op_determinism` is process-wide and TF exports no way
  back; without restoring it, one deterministic run in a process (a test, a notebook)
  would make every later XLA max-pool run fail. `disable_op_determinism` lives in
  tensorflow.python.framework.config (TF 2.21); where it is missing, it stays enabled.
  """
  if not enabled or tf_config.is_op_determinism_enabled():
    yield
    return
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    disable = getattr(tf_config, "disable_op_determinism", None)
    if disable is not None:
      disable()


def check_determinism(deterministic: bool, jit_compile: bool, downsample: str) -> None:
  if deterministic and jit_compile and downsample == "maxpool":
    raise errors.UsageError(
        "--deterministic with --downsample=maxpool needs --nojit_compile: TensorFlow has "
        "no deterministic XLA max-pool gradient (avgpool and conv work with XLA)")


def compile_policy(jit_compile: bool, num_programs: int, max_live: int,
                   strategy: str = "none") -> tuple[bool, str]:
  """Whether to XLA-compile steps that need `num_programs` programs (one per
  configuration), and why.

  Measured (BUILD_NOTES.md, "Compile policy"): a dropped XLA program is never freed (its
  executable stays in XLA's cache, ~10 MB per ResNet20 step on the CPU) and the process
  crashed after ~150 of them, while a dropped graph-mode program is freed. So XLA runs
  when every program stays alive within the bound; beyond it, graph mode with at most
  `max_live` live programs (the least recently used are traced again when met). A
  tf.distribute `strategy` other than "none" runs in graph mode.
  """
  if not jit_compile:
    return False, "graph mode (--nojit_compile)"
  if strategy != "none":
    return False, (f"graph mode: --strategy={strategy} all-reduces through tf.distribute, "
                   "which an XLA-compiled replica step cannot contain (distribute.py)")
  if num_programs <= max_live:
    return True, f"XLA: {num_programs} programs per step kind <= {max_live} live"
  return False, (f"graph mode: {num_programs} configurations exceed "
                 f"--max_live_programs={max_live}, and XLA never frees a compiled program")
