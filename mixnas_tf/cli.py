"""Flags and error handling shared by the `python -m mixnas_tf.*` entry points.

Flag defaults come from each command's config dataclass, so a default lives in one place.
"""

import functools
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.nn import ops

# How a user names configurations; one text for every command's help.
CONFIG_NOTATIONS = (
    "stages ('4,3,3' in ResNet20, '3,2,2,2' in ResNet18, '3,4,6,3' in ResNet50, whose "
    "stages count blocks only), a reference number (ResNet20 1..36, ResNet18 0..55, "
    "ResNet50 0..454, the reference code's numbering) or the 0/1 code of one digit per "
    "layer")


def define_space_flag(default: str, what: str) -> None:
  flags.DEFINE_enum("space", default, sorted(spaces.SPACES), f"Search space: {what}. "
                    "resnet20 (36 configurations, CIFAR), resnet18 (56, CIFAR), resnet50 "
                    "(455, bottleneck; ImageNet stem from 128 px, e.g. Food101 at 224).")


def define_downsample_flag(default: str, choices=ops.FIXED) -> None:
  flags.DEFINE_enum("downsample", default, list(choices), "Downsampling op: " + "; ".join(
      f"{name}: {ops.OPS[name].help}" for name in choices) + ".")

FLAGS = flags.FLAGS


def define_data_flags(defaults) -> None:
  flags.DEFINE_string("dataset", defaults.dataset, "cifar10, cifar100 or food101 (through "
                      "TensorFlow Datasets), or folder:PATH for an image folder "
                      "PATH/train/<class>/* with an optional PATH/test/<class>/*.")
  flags.DEFINE_string("tfds_data_dir", defaults.tfds_data_dir, "TensorFlow Datasets data "
                      "directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets).")
  flags.DEFINE_bool("skip_bad_images", defaults.skip_bad_images, "Image folders: leave out "
                    "files that cannot be decoded (listed in the work directory's "
                    "search_space.json / run.json) instead of stopping at the first one.")
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
  flags.DEFINE_integer("warmup_epochs", defaults.warmup_epochs, "Epochs of linear "
                       "learning-rate warm-up from 0 (in a search, over the global step; at most "
                       "--epochs there and counted like it, so with --budget=per_set each "
                       "weight set gets this many epochs of its own steps; the paper uses 0 "
                       "and a work directory from before the flag resumes only with 0).",
                       lower_bound=0)


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
  flags.DEFINE_bool("augment_in_step", defaults.augment_in_step, "Crop and flip the stored "
                    "(uint8, e.g. CIFAR) training images inside the compiled step instead "
                    "of the input pipeline: the same batches, bit for bit, with the work "
                    "moved off the host's cores (for a GPU whose input pipeline limits "
                    "it). JPEG datasets are augmented in the pipeline whatever this says. "
                    "Needs --strategy=none.")
  # Entry points define their flags after TensorFlow started (quiet_startup).
  from mixnas_tf.training import distribute  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum("strategy", defaults.strategy, list(distribute.STRATEGIES), "Data "
                    "parallelism with tf.distribute: none (one device), mirrored (every GPU "
                    "of this machine; --batch_size is the global batch, split across them) "
                    "or multi_worker (the machines of TF_CONFIG). Synchronized BatchNorm "
                    "and all-reduced gradients: the one-device results up to rounding; "
                    "graph mode (no XLA). README, 'Past one GPU'.")


def define_xla_cache_flag() -> None:
  flags.DEFINE_string("xla_cache_dir", None, "Directory of XLA's persistent compilation "
                      "cache (default: WORKDIR/xla_cache), so that a resumed or repeated run "
                      "(another --seed included) does not compile its steps again; several "
                      "runs may share one. 'none' disables it.")


def _command_line_values(argv) -> dict[str, str]:
  """--name=value, --name and --noname from `argv` and its --flagfile files (one level)."""
  values = {}
  for arg in argv:
    if arg.startswith("--flagfile="):
      try:
        with open(os.path.expanduser(arg.split("=", 1)[1])) as f:
          values.update(_command_line_values(
              [line.strip() for line in f if line.strip().startswith("--")]))
      except OSError:
        pass  # absl reports an unreadable flagfile in its own words.
    elif arg.startswith("--") and "=" in arg:
      name, value = arg[2:].split("=", 1)
      values[name] = value
    elif arg.startswith("--no"):
      values[arg[4:]] = "false"
    elif arg.startswith("--"):
      values[arg[2:]] = "true"
  return values


def preset_xla_cache(argv=None) -> str | None:
  """Points XLA's persistent compilation cache at --xla_cache_dir (default WORKDIR/xla_cache)
  *before TensorFlow starts*: entry points call it before importing anything that imports
  TensorFlow.

  TF reads TF_XLA_FLAGS once, when its first op (or absl's app.run) initialises it;
  setting it later silently does nothing (measured: BUILD_NOTES.md). Nothing is set for
  --nojit_compile or --xla_cache_dir=none, nor over a user's own setting; XLA creates the
  directory at its first compilation. Returns the directory, or None.
  """
  values = _command_line_values(sys.argv[1:] if argv is None else argv)
  if values.get("jit_compile", "true").lower() in ("false", "0"):
    return None
  directory = values.get("xla_cache_dir")
  if not directory and values.get("workdir"):
    directory = os.path.join(os.path.expanduser(values["workdir"]), "xla_cache")
  existing = os.environ.get("TF_XLA_FLAGS", "")
  if not directory or directory == "none" or "tf_xla_persistent_cache_directory" in existing:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  os.environ["TF_XLA_FLAGS"] = (
      f"{existing} --tf_xla_persistent_cache_directory={directory}".strip())
  return directory


def quiet_startup(argv=None) -> None:
  """Starts TensorFlow without its start-up noise, unless --verbose is given.

  TF 2.21 prints ~10 lines while it loads (oneDNN, CUDA drivers, cuInit on machines
  without a GPU) before its log level applies, burying a command's one-line error. They
  go to /dev/null while TensorFlow imports and runs its first op; later C++ logging keeps
  TF_CPP_MIN_LOG_LEVEL=3 (errors reach the user as Python exceptions). Call it after
  `preset_xla_cache` (the first op reads XLA's flags).
  """
  args = sys.argv[1:] if argv is None else argv
  if any(a in ("--verbose", "--verbose=true") for a in args):
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.zeros([1])
  finally:
    os.dup2(saved, 2)
    os.close(devnull)
    os.close(saved)


def define_standalone_flags(defaults, skip=frozenset()) -> None:
  """Every field of `standalone.StandaloneConfig` but `config` as a flag (not `skip`).

  One definition for every command that trains stand-alone networks (retrain, exhaustive,
  tune, diffstride_train); defaults come from `defaults`, a StandaloneConfig.
  """
  d, skip = defaults, set(skip)
  define_data_flags(d)
  define_space_flag(d.space, "the network that is trained")
  if "downsample" not in skip:
    define_downsample_flag(d.downsample)
  if "epochs" not in skip:
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs over the training split.",
                         lower_bound=1)
  define_optim_flags(d)
  flags.DEFINE_enum("schedule", d.schedule, ["cosine", "step", "constant"], "Learning-rate "
                    "schedule: cosine decay to --min_learning_rate, step decay by --step_decay at "
                    "--step_boundaries, or constant.")
  flags.DEFINE_float("step_decay", d.step_decay, "With --schedule=step: the factor of each "
                     "drop (0.1 = 10x; the reference's ResNet50 retraining uses 0.2).",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_list("step_boundaries", [str(b) for b in d.step_boundaries], "With "
                    "--schedule=step: the fractions of training at which the learning rate "
                    "drops by --step_decay.")
  flags.DEFINE_bool("nesterov", d.nesterov, "Use Nesterov momentum.")
  flags.DEFINE_float("label_smoothing", d.label_smoothing, "Label smoothing of the "
                     "cross-entropy loss, in [0, 1).", lower_bound=0.0, upper_bound=0.999)
  flags.DEFINE_integer("train_size", d.train_size, "Subsample the training split to this "
                       "many images (quick runs, smaller budgets); 0 keeps it whole.",
                       lower_bound=0)
  flags.DEFINE_integer("test_size", d.test_size, "Subsample the evaluation split to this "
                       "many images; 0 keeps it whole.", lower_bound=0)
  if "eval_split" not in skip:
    flags.DEFINE_enum("eval_split", d.eval_split, ["test", "holdout"], "Where the reported "
                      "accuracy comes from: the test split (TFDS test, Food101 validation, "
                      "PATH/test of a folder, or a held-out part of train when the folder "
                      "has none), or always a held-out part of train.")
  flags.DEFINE_float("holdout_fraction", d.holdout_fraction, "Fraction of the training "
                     "split held out for evaluation when there is no test split or "
                     "--eval_split=holdout.")
  flags.DEFINE_integer("data_seed", d.data_seed, "Seed of the held-out split and of the "
                       "subsamples (--seed drives initialisation, order and augmentation), "
                       "so that runs of several seeds are scored on the same images.")
  define_run_flags(d)
  define_xla_cache_flag()


def flag_values(names) -> tuple[dict, set]:
  """(values, names given on the command line) of the absl flags `names` that exist."""
  values, given = {}, set()
  for name in names:
    if name in FLAGS:
      values[name] = FLAGS[name].value
      if FLAGS[name].present:
        given.add(name)
  return values, given


def standalone_values(config_cls, **overrides):
  """`config_cls` (StandaloneConfig) from the flags `define_standalone_flags` defined."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(config_cls)
            if f.name in FLAGS and f.name != "config"}
  if "step_boundaries" in values:
    from mixnas_tf.training import trainer  # pylint: disable=g-import-not-at-top
    values["step_boundaries"] = trainer.OptimConfig.parse_boundaries(values["step_boundaries"])
  values.update(overrides)
  return config_cls(**values)


def parse_flags(argv):
  """absl flag parsing whose errors are one line and exit 2 (no usage dump); --help and
  --helpfull exit 0 (absl exits 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except SystemExit as e:
    if e.code == 1 and any(a.split("=")[0] in ("--help", "-h", "--helpfull", "--helpshort",
                                               "-?") for a in argv[1:]):
      sys.exit(0)
    raise


def run(main) -> None:
  """Runs an entry point: its flags and the shared ones (defined here, in cli) listed by
  --help, one-line errors (`guarded`), exit status 0 when it returns."""
  if "verbose" not in FLAGS:
    flags.DEFINE_bool("verbose", False, "Show TensorFlow's start-up and C++ log messages.")
  shared = FLAGS.get_key_flags_for_module(sys.modules[__name__])
  for module in (sys.modules["__main__"].__name__, sys.argv[0]):
    for flag in shared:
      FLAGS.register_key_flag_for_module(module, flag)
  app.run(guarded(main), flags_parser=parse_flags)
  sys.exit(0)


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


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def guarded(main):
  """Turns UsageError into `error: <message>` on stderr and exit status 2, RunError
  (divergence, a checkpoint that could not be written) and a full disk into one such line
  and exit status 1, and Ctrl-C or
  SIGTERM outside the training loop (which checkpoints them itself: loop.GracefulStop),
  e.g. while loading data or in the final evaluation, into one line and exit status 130."""

  @functools.wraps(main)
  def wrapper(argv):
    signal.signal(signal.SIGTERM, _interrupt)
    try:
      return main(argv)
    except errors.UsageError as e:
      logging.flush()
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except errors.RunError as e:
      logging.flush()
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    except OSError as e:
      if not errors.is_no_space(e):
        raise
      logging.flush()
      print(f"error: could not write {e.filename or ''}: {e.strerror or e}; finished work "
            "is kept: make room and run the same command again", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:
      logging.flush()
      print("interrupted: finished work is kept; run the same command again to resume",
            file=sys.stderr)
      sys.exit(130)

  return wrapper
