r"""Export of a trained stand-alone network as plain Keras and TensorFlow artefacts.

  python -m mixnas_tf.export --workdir=RUN_DIR [--out=DIR]

A `SwitchableResNet` holds stacked weights and custom layers, so its own `.keras` file
only loads where mixnas_tf is importable. `to_functional` rebuilds one (configuration,
weight set) of it as a functional model of standard Keras layers (Conv2D,
BatchNormalization, pooling, Add, Dense, ...) with the trained weights copied in, from the
network's own forward pass (nn/interpret.py: `KerasBuild`); that model is what gets
shipped. `export` writes, into RUN_DIR/export by default:
  - model.keras: loads with `keras.models.load_model` in any Keras 3 process;
  - saved_model/: `tf.saved_model.load`-able, signature `serving_default` taking
    `images` uint8 [B, S, S, 3] and returning `probabilities` float32 [B, classes];
  - export.json: configuration, class names, input size, preprocessing, test accuracy,
    and the export's identity (configuration + fingerprint of the weights).
Both model forms normalise the pixels inside and output class probabilities.
"""

from collections.abc import Sequence
import hashlib
import os
import shutil
import tempfile

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from mixnas_tf import data as data_lib
from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import standalone
from mixnas_tf.nn import network
from mixnas_tf.nn import ops

FORMAT_VERSION = 1
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
INFO_FILE = "export.json"
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# Exported forms must reproduce the in-process model to this (probabilities in [0, 1]).
TOLERANCE = 1e-4


def to_functional(model: network.SwitchableResNet, config: Sequence[int], model_index: int = 0,
                  *, image_size: int | None = None, name: str | None = None) -> keras.Model:
  """Rebuilds weight set `model_index` of `model` in `config` from standard Keras layers.

  The result computes `softmax(model(images, config=config, model_index=model_index,
  training=False))` with BatchNorm on its moving statistics. It is built in float32
  whatever the global dtype policy.

  Args:
    model: a `SwitchableResNet` with standard BatchNorm (moving statistics).
    config: one of `model.configs` (0/1 code [num_layers]).
    model_index: the weight set to copy, in [0, model.num_models).
    image_size: input side S; None accepts any size.
    name: the functional model's name (default: <space>_<stages>).

  Returns:
    A functional `keras.Model`: uint8 pixels [B, S, S, 3] -> probabilities
    float32 [B, num_classes]. The layer named "logits" gives the pre-softmax outputs.

  Raises:
    ValueError: a SuperNet with batch-statistics BatchNorm (it has no moving statistics
      to freeze), a downsampling op other than the fixed ones (nn.ops.FIXED),
      a configuration the model was not built for, or a bad index.
  """
  config = tuple(int(d) for d in config)
  if model.downsample not in ops.FIXED:
    raise ValueError(f"only the fixed downsampling ops {', '.join(ops.FIXED)} "
                     "have standard Keras equivalents. "
                     f"Received: downsample={model.downsample!r}")
  if model.batchnorm != "standard":
    raise ValueError("only a network with standard BatchNorm (moving statistics) can be "
                     f"exported. Received: batchnorm={model.batchnorm!r}")
  if config not in model.configs:
    raise ValueError(f"the network was not built for configuration {config}. "
                     f"Received: config={spaces.to_code_string(config)}")
  if not 0 <= int(model_index) < model.num_models:
    raise ValueError(f"model_index must be in [0, {model.num_models}). "
                     f"Received: model_index={model_index}")
  return model.to_functional(config, int(model_index), image_size=image_size,
                             input_name=INPUT_NAME, output_name=OUTPUT_NAME, name=name)


def weights_fingerprint(model: keras.Model) -> str:
  """sha256 of the model's weights (float32 bytes, in layer order): the export's identity."""
  digest = hashlib.sha256()
  for w in model.get_weights():
    w = np.ascontiguousarray(w, np.float32)
    digest.update(str(w.shape).encode())
    digest.update(w.tobytes())
  return digest.hexdigest()


def write_saved_model(model: keras.Model, path: str) -> None:
  """SavedModel whose `serving_default` maps `images` uint8 [B,S,S,3] to `probabilities`."""
  archive = keras.export.ExportArchive()
  archive.track(model)
  spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8, name=INPUT_NAME)

  def serve(images):
    return {OUTPUT_NAME: model(images, training=False)}

  archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
  archive.write_out(path, verbose=False)


def _check_images(image_size: int, count: int = 8, seed: int = 0) -> np.ndarray:
  """Fixed random pixels uint8 [count, S, S, 3] to compare the exported forms on."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (count, image_size, image_size, 3), dtype=np.uint8)


def _preprocessing(image_size: int, mean, std) -> dict:
  if image_size <= data_lib.MAX_RAW_IMAGE_SIZE:
    before = (f"decode to RGB uint8 and resize to {image_size}x{image_size} (antialiased "
              "bilinear) unless already that size")
  else:
    before = (f"decode to RGB uint8, resize the shorter side to "
              f"{round(image_size / data_lib.EVAL_CROP_FRACTION)} pixels and crop the "
              f"central {image_size}x{image_size}")
  return {
      "before_model": before,
      "inside_model": "x = pixels / 255; x = (x - mean) / std per channel (RGB)",
      "mean": list(mean),
      "std": list(std),
  }


def _identity(info: dict) -> dict:
  return {"config": info["config"]["code"], "weights_sha256": info["weights_sha256"]}


def _existing_export(out_dir: str) -> dict | None:
  """export.json of `out_dir` if it holds an export; raises if it holds anything else."""
  if not os.path.exists(out_dir):
    return None
  if not os.path.isdir(out_dir):
    raise errors.UsageError(f"export directory {out_dir} exists and is not a directory")
  info_path = os.path.join(out_dir, INFO_FILE)
  if os.path.exists(info_path):
    try:
      return workdir_lib.read_json(info_path)
    except (OSError, ValueError):
      raise errors.UsageError(f"{info_path} is unreadable; remove {out_dir} or choose "
                              "another --out") from None
  if os.listdir(out_dir):
    raise errors.UsageError(f"export directory {out_dir} is not empty and holds no "
                            f"{INFO_FILE}; choose an empty or new --out")
  return None


def _complete(out_dir: str) -> bool:
  return all(os.path.exists(os.path.join(out_dir, f))
             for f in (KERAS_FILE, os.path.join(SAVED_MODEL_DIR, "saved_model.pb"), INFO_FILE))


def export(run_dir: str, out_dir: str | None = None) -> dict:
  """Exports a finished stand-alone run (`standalone.train_standalone`'s workdir).

  The files are written into a temporary directory beside `out_dir`, checked against the
  in-process model, and then moved into place, so `out_dir` never holds half an export.
  Exporting the same model again is a no-op.

  Args:
    run_dir: the training run's directory.
    out_dir: where to write; default `run_dir/export`.

  Returns:
    The export's description (the content of export.json).

  Raises:
    errors.UsageError: `run_dir` holds no finished run, or `out_dir` holds something else
      than an export of this model (nothing is overwritten then).
  """
  run_dir = os.path.abspath(run_dir)
  out_dir = os.path.abspath(out_dir or os.path.join(run_dir, "export"))
  model, run = standalone.restore_model(run_dir)
  if model.downsample not in ops.FIXED:
    raise errors.UsageError(f"{run_dir} trained downsample={model.downsample}; only "
                            f"{', '.join(ops.FIXED)} networks can be "
                            "exported as standard Keras layers")
  config = tuple(model.configs[0])
  image_size = int(run["image_size"])
  functional = to_functional(model, config, 0, image_size=image_size)
  fingerprint = weights_fingerprint(functional)
  existing = _existing_export(out_dir)
  metrics_path = os.path.join(run_dir, "metrics.json")
  metrics = workdir_lib.read_json(metrics_path) if os.path.exists(metrics_path) else {}
  flags_json = workdir_lib.read_json(os.path.join(run_dir, "flags.json"))
  info = {
      "format_version": FORMAT_VERSION,
      "run_dir": run_dir,
      "config": run["config"],
      "space": model.space.name,
      "downsample": model.downsample,
      "weights_sha256": fingerprint,
      "dataset": flags_json.get("dataset"),
      "class_names": list(run["classes"]),
      "num_classes": model.num_classes,
      "input": {"name": INPUT_NAME, "shape": [image_size, image_size, 3], "dtype": "uint8",
                "range": "RGB pixels in [0, 255]"},
      "preprocessing": _preprocessing(image_size, model.mean, model.std),
      "output": {"name": OUTPUT_NAME, "shape": [model.num_classes], "dtype": "float32",
                 "meaning": "class probabilities (softmax), indexed like class_names"},
      "test_accuracy": metrics.get("test_accuracy"),
      "eval_split": metrics.get("eval_split", run.get("eval_split")),
      "test_images": metrics.get("test_images"),
      "params": metrics.get("params", model.count_params_per_model(config)),
      "macs": metrics.get("macs"),
      "files": {"keras": KERAS_FILE, "saved_model": SAVED_MODEL_DIR,
                "signature": SIGNATURE},
      "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
  }
  if existing is not None:
    same = (isinstance(existing.get("config"), dict) and "weights_sha256" in existing
            and _identity(existing) == _identity(info))
    if not same:
      raise errors.UsageError(
          f"{out_dir} already holds an export of a different model (configuration "
          f"{existing.get('config', {}).get('code')}, from {existing.get('run_dir')}); "
          "choose another --out or remove it")
    if _complete(out_dir):
      logging.info("%s already holds this export.", out_dir)
      return existing

  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.tmp-")
  try:
    images = _check_images(image_size)
    reference = tf.nn.softmax(model(tf.constant(images), config=config, training=False))
    reference = reference.numpy()
    functional.save(os.path.join(tmp, KERAS_FILE))
    write_saved_model(functional, os.path.join(tmp, SAVED_MODEL_DIR))
    reloaded = keras.models.load_model(os.path.join(tmp, KERAS_FILE), compile=False)
    serving = tf.saved_model.load(os.path.join(tmp, SAVED_MODEL_DIR)).signatures[SIGNATURE]
    diffs = {
        "functional": np.abs(functional(images, training=False).numpy() - reference).max(),
        "keras": np.abs(reloaded(images, training=False).numpy() - reference).max(),
        "saved_model": np.abs(serving(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME]
                              .numpy() - reference).max(),
    }
    bad = {k: float(v) for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
      raise errors.UsageError(
          f"the exported model differs from {run_dir}'s network by more than {TOLERANCE} "
          f"(max |difference| of probabilities {bad}); nothing was exported")
    info["check"] = {"images": len(images), "max_abs_diff": {k: float(v)
                                                             for k, v in diffs.items()}}
    workdir_lib.atomic_write_json(os.path.join(tmp, INFO_FILE), info)
    _replace_dir(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info("Exported %s to %s.", run_dir, out_dir)
  return info


def _replace_dir(new: str, target: str) -> None:
  """Moves directory `new` to `target`, replacing an (empty or stale) `target`."""
  if not os.path.exists(target):
    os.rename(new, target)
    return
  # A directory cannot be swapped in one rename: move the old one aside first, so
  # `target` is either the old complete content or the new one, never a mix.
  old = tempfile.mkdtemp(dir=os.path.dirname(target),
                         prefix=f".{os.path.basename(target)}.old-")
  os.rmdir(old)
  os.rename(target, old)
  os.rename(new, target)
  shutil.rmtree(old, ignore_errors=True)
