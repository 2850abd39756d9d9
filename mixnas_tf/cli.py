"""Flags and error handling shared by the `python -m mixnas_tf.*` entry points.

Flag defaults come from each command's config dataclass, so a default lives in one place.
"""

import functools
import os
import sys

from absl import flags
from absl import logging

from mixnas_tf import errors

FLAGS = flags.FLAGS


def define_data_flags(defaults) -> None:
  flags.DEFINE_string("dataset", defaults.dataset, "cifar10, cifar100 or food101 (through "
                      "TensorFlow Datasets), or folder:PATH for an image folder "
                      "PATH/train/<class>/* with an optional PATH/test/<class>/*.")
  flags.DEFINE_string("tfds_data_dir", defaults.tfds_data_dir, "TensorFlow Datasets data "
                      "directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets).")
  flags.DEFINE_integer("image_size", defaults.image_size, "Input size in pixels (square); "
                       "0 = the dataset's own (32 for CIFAR, 224 for Food101).", lower_bound=0)
  flags.DEFINE_integer("batch_size", defaults.batch_size, "Training batch size.",
                       lower_bound=1)
  flags.DEFINE_integer("eval_batch_size", defaults.eval_batch_size, "Evaluation batch size.",
                       lower_bound=1)


def define_optim_flags(defaults) -> None:
  flags.DEFINE_float("learning_rate", defaults.learning_rate, "Initial SGD learning rate.")
  flags.DEFINE_float("min_learning_rate", defaults.min_learning_rate, "Learning rate at the "
                     "end of the cosine schedule.", lower_bound=0.0)
  flags.DEFINE_float("momentum", defaults.momentum, "SGD momentum.", lower_bound=0.0,
                     upper_bound=0.999)
  flags.DEFINE_float("weight_decay", defaults.weight_decay, "L2 weight decay added to the "
                     "gradients (PyTorch SGD semantics).", lower_bound=0.0)


def define_run_flags(defaults) -> None:
  flags.DEFINE_enum("precision", defaults.precision,
                    ["float32", "mixed_bfloat16", "mixed_float16"], "Compute precision; "
                    "mixed_float16 uses dynamic loss scaling. Variables stay float32.")
  flags.DEFINE_bool("jit_compile", defaults.jit_compile, "Compile the steps with XLA.")
  flags.DEFINE_integer("seed", defaults.seed, "Seed of every random choice of the run: "
                       "splits, initialisation, data order, augmentation, sampling.")
  flags.DEFINE_bool("deterministic", defaults.deterministic, "Enable TensorFlow's op "
                    "determinism (bitwise reproducible, somewhat slower).")
  flags.DEFINE_integer("log_every", defaults.log_every, "Log and update the progress bar "
                       "every this many steps.", lower_bound=1)
  flags.DEFINE_bool("progress", defaults.progress, "Show a progress bar.")


def define_xla_cache_flag() -> None:
  flags.DEFINE_string("xla_cache_dir", None, "Directory of XLA's persistent compilation "
                      "cache (default: WORKDIR/xla_cache), so that a resumed or repeated run "
                      "does not compile its steps again. 'none' disables it.")


def enable_xla_cache(directory: str | None, workdir: str) -> None:
  """Points XLA's persistent compilation cache at `directory` (before the first compile).

  TF reads TF_XLA_FLAGS when it compiles the first XLA cluster, so setting it here, after
  TensorFlow was imported but before any step ran, takes effect. A user's own
  TF_XLA_FLAGS setting of the cache wins.
  """
  if directory == "none":
    return
  existing = os.environ.get("TF_XLA_FLAGS", "")
  if "tf_xla_persistent_cache_directory" in existing:
    return
  directory = os.path.abspath(directory or os.path.join(workdir, "xla_cache"))
  os.makedirs(directory, exist_ok=True)
  os.environ["TF_XLA_FLAGS"] = (
      f"{existing} --tf_xla_persistent_cache_directory={directory}".strip())


def parse_flags(argv):
  """absl flag parsing whose errors are one line and exit 2 (no usage dump)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def check_no_positional(argv) -> None:
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}; "
                            "every option is a --flag")


def required_workdir(workdir: str | None) -> str:
  if not workdir:
    raise errors.UsageError("--workdir is required (the run's output directory)")
  return os.path.abspath(os.path.expanduser(workdir))


def exit_interrupted() -> None:
  print("interrupted: state checkpointed; run the same command again to resume",
        file=sys.stderr)
  sys.exit(130)


def guarded(main):
  """Turns UsageError into `error: <message>` on stderr and exit status 2."""

  @functools.wraps(main)
  def wrapper(argv):
    try:
      return main(argv)
    except errors.UsageError as e:
      logging.flush()
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapper
