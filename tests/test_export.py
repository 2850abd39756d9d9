"""Export: the standard-layer rebuild matches the network, and loads without mixnas_tf."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.exporting import keras_export as export
from mixnas_tf.methods import standalone
from mixnas_tf.nn import network
from mixnas_tf.nn import ops

SPACE = spaces.get_space("resnet20")
CONFIGS = {s: spaces.parse_config(SPACE, s) for s in ("4,3,3", "1,1,8", "2,7,1")}
REPO = pathlib.Path(__file__).resolve().parents[1]


def _network(config, mode, seed=0):
  """K = 2 stand-alone-style network with non-trivial BatchNorm parameters and statistics."""
  model = network.SwitchableResNet(configs=[config], num_models=2, downsample=mode,
                                  batchnorm="standard", mean=(0.49, 0.48, 0.45),
                                  std=(0.25, 0.24, 0.26))
  rng = np.random.default_rng(seed)
  for v in model.non_trainable_variables + model.trainable_variables:
    name = v.path.split("/")[-1]
    if name in ("gamma", "moving_variance"):
      v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    elif name in ("beta", "moving_mean"):
      v.assign(rng.normal(0.0, 0.3, v.shape).astype(np.float32))
  return model


def _pixels(n, size, seed=1):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ops.FIXED)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_functional_matches_network(mode, name):
  config = CONFIGS[name]
  model = _network(config, mode)
  # 15 is odd at every resolution: it pins 'SAME' padding of pools and strided convs.
  for size in (32, 15):
    functional = export.to_functional(model, config, model_index=1, image_size=size)
    images = _pixels(4, size)
    logits = model(tf.constant(images), config=config, model_index=tf.constant(1),
                   training=False).numpy()
    exported_logits = keras.Model(functional.input,
                                  functional.get_layer("logits").output)(images).numpy()
    scale = np.abs(logits).max()
    np.testing.assert_allclose(exported_logits, logits, rtol=1e-4, atol=1e-4 * scale)
    # Random weights give logits of ~1e2, where float32 rounding moves probabilities
    # by ~1e-5: the logits above are the tight check.
    np.testing.assert_allclose(functional(images).numpy(), tf.nn.softmax(logits).numpy(),
                               atol=export.TOLERANCE)
  # Slice 1 was copied, not slice 0.
  assert not np.allclose(functional.get_layer("stem_conv").get_weights()[0],
                         model.stem.conv.kernel.numpy()[0])


def test_functional_is_standard_keras_only():
  model = _network(CONFIGS["4,3,3"], "conv")
  functional = export.to_functional(model, CONFIGS["4,3,3"], image_size=32)
  assert {type(l).__module__.split(".")[0] for l in functional.layers} == {"keras"}
  assert functional.input.dtype == "uint8"
  assert functional.output.shape == (None, 10)
  bn = functional.get_layer("block1_bn1")
  assert bn.epsilon == 1e-5 and bn.momentum == pytest.approx(0.9)


def test_functional_refuses_supernet_and_unknown_config():
  supernet = network.SwitchableResNet(configs=[CONFIGS["4,3,3"]], batchnorm="batch_stats")
  with pytest.raises(ValueError, match="standard BatchNorm"):
    export.to_functional(supernet, CONFIGS["4,3,3"])
  with pytest.raises(ValueError, match="not built for configuration"):
    export.to_functional(_network(CONFIGS["4,3,3"], "maxpool"), CONFIGS["1,1,8"])


def _write_folder(root, classes=("cat", "dog", "emu"), per_class=16, size=16, seed=0):
  rng = np.random.default_rng(seed)
  for c, name in enumerate(classes):
    folder = root / "train" / name
    folder.mkdir(parents=True)
    for i in range(per_class):
      image = rng.integers(0, 120, (size, size, 3))
      image[..., c] += 120  # A class-coloured tint, so the classes are learnable.
      tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image.astype(np.uint8)))
  return root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A tiny finished stand-alone run (16x16 synthetic images, two steps, no XLA)."""
  root = tmp_path_factory.mktemp("export")
  cfg = standalone.StandaloneConfig(
      dataset=f"folder:{_write_folder(root / 'data')}", config="5,3,2", epochs=1,
      batch_size=16, eval_batch_size=8, downsample="avgpool", jit_compile=False,
      progress=False, holdout_fraction=0.25)
  run_dir = str(root / "run")
  assert standalone.train_standalone(cfg, run_dir) is not None
  return run_dir


def _tree_digest(path):
  digest = hashlib.sha256()
  for p in sorted(pathlib.Path(path).rglob("*")):
    if p.is_file():
      digest.update(str(p.relative_to(path)).encode())
      digest.update(p.read_bytes())
  return digest.hexdigest()


def test_export_loads_without_mixnas_tf(finished_run, tmp_path):
  info = export.export(finished_run)
  out = os.path.join(finished_run, "export")
  assert sorted(os.listdir(out)) == ["export.json", "model.keras", "saved_model"]
  on_disk = json.loads(pathlib.Path(out, "export.json").read_text())
  assert on_disk == json.loads(json.dumps(info))
  metrics = json.loads(pathlib.Path(finished_run, "metrics.json").read_text())
  assert info["config"]["stages"] == [5, 3, 2]
  assert info["class_names"] == ["cat", "dog", "emu"]
  assert info["input"]["shape"] == [16, 16, 3]
  assert info["test_accuracy"] == metrics["test_accuracy"]
  assert info["preprocessing"]["mean"] and info["preprocessing"]["std"]

  images = _pixels(5, 16, seed=7)
  np.save(tmp_path / "images.npy", images)
  script = f"""
import sys
import numpy as np
import keras
import tensorflow as tf
images = np.load({str(tmp_path / 'images.npy')!r})
model = keras.models.load_model({os.path.join(out, 'model.keras')!r})
serving = tf.saved_model.load({os.path.join(out, 'saved_model')!r}).signatures["serving_default"]
np.save({str(tmp_path / 'keras.npy')!r}, model.predict(images, verbose=0))
probabilities = serving(images=tf.constant(images))["probabilities"]
np.save({str(tmp_path / 'saved.npy')!r}, probabilities.numpy())
assert "mixnas_tf" not in sys.modules, "the export must load without mixnas_tf"
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
  model, run = standalone.restore_model(finished_run)
  expected = tf.nn.softmax(model(tf.constant(images), training=False)).numpy()
  np.testing.assert_allclose(np.load(tmp_path / "keras.npy"), expected, atol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "saved.npy"), expected, atol=1e-5)

  # Exporting the same model again is a no-op.
  before = _tree_digest(out)
  assert export.export(finished_run) == on_disk
  assert _tree_digest(out) == before


def test_export_refuses_a_different_model(finished_run, tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  (other / "export.json").write_text(json.dumps({
      "config": {"code": "0,0,0,0,1,0,0,1,0,0"}, "weights_sha256": "0" * 64,
      "run_dir": "/elsewhere"}))
  (other / "model.keras").write_text("another model")
  before = _tree_digest(other)
  with pytest.raises(errors.UsageError, match="different model"):
    export.export(finished_run, str(other))
  assert _tree_digest(other) == before
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".other")]  # No temp left.

  cluttered = tmp_path / "cluttered"
  cluttered.mkdir()
  (cluttered / "notes.txt").write_text("mine")
  with pytest.raises(errors.UsageError, match="not empty"):
    export.export(finished_run, str(cluttered))
  with pytest.raises(errors.UsageError, match="no stand-alone training run"):
    export.export(str(tmp_path / "missing"))

  # The command line: one line on stderr, exit status 2, nothing overwritten.
  result = subprocess.run(
      [sys.executable, "-m", "mixnas_tf.export", f"--workdir={finished_run}",
       f"--out={other}"], capture_output=True, text=True, timeout=300, cwd=REPO,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "different model" in last
  assert _tree_digest(other) == before


def test_export_replaces_an_incomplete_export_of_the_same_model(finished_run, tmp_path):
  export.export(finished_run)
  out = tmp_path / "partial"
  shutil.copytree(os.path.join(finished_run, "export"), out)
  (out / "model.keras").unlink()
  export.export(finished_run, str(out))
  assert (out / "model.keras").is_file()


@pytest.mark.parametrize("space, config", [("resnet18", "3,2,2,2"), ("resnet50", "1,1,13,1")])
def test_larger_spaces_train_and_export_plain_keras(space, config, tmp_path):
  """ResNet18 / ResNet50 (strided convs, strided-identity shortcuts, bottlenecks) through
  the whole stand-alone path: train, restore from the checkpoint, export, and load the
  export in a process without mixnas_tf."""
  cfg = standalone.StandaloneConfig(
      dataset=f"folder:{_write_folder(tmp_path / 'data')}", space=space, config=config,
      downsample="conv", epochs=1, batch_size=12, eval_batch_size=8, jit_compile=False,
      progress=False, holdout_fraction=0.25)
  run_dir = str(tmp_path / "run")
  metrics = standalone.train_standalone(cfg, run_dir)
  assert metrics["config"]["stages"] == [int(v) for v in config.split(",")]
  info = export.export(run_dir)
  assert info["config"]["stages"] == metrics["config"]["stages"]
  images = _pixels(4, 16, seed=3)
  np.save(tmp_path / "images.npy", images)
  script = f"""
import sys
import numpy as np
import keras
model = keras.models.load_model({os.path.join(run_dir, 'export', 'model.keras')!r})
np.save({str(tmp_path / 'keras.npy')!r}, model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))
assert "mixnas_tf" not in sys.modules
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
  model, _ = standalone.restore_model(run_dir)
  expected = tf.nn.softmax(model(tf.constant(images), training=False)).numpy()
  np.testing.assert_allclose(np.load(tmp_path / "keras.npy"), expected, atol=1e-5)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_export(precision, tmp_path):
  """A run trained in mixed precision exports: its float32 weights are restored into a
  float32 network, which the float32 export reproduces (it once failed the check with a
  traceback, comparing against the network in bfloat16)."""
  cfg = standalone.StandaloneConfig(
      dataset=f"folder:{_write_folder(tmp_path / 'data')}", config="4,3,3", epochs=1,
      batch_size=12, eval_batch_size=8, jit_compile=False, progress=False,
      holdout_fraction=0.25, precision=precision)
  run_dir = str(tmp_path / "run")
  try:
    assert standalone.train_standalone(cfg, run_dir) is not None
  finally:
    keras.mixed_precision.set_global_policy("float32")
  info = export.export(run_dir)
  assert max(info["check"]["max_abs_diff"].values()) <= export.TOLERANCE
  model, _ = standalone.restore_model(run_dir)
  assert model.compute_dtype == "float32"
