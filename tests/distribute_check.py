"""Runs the same search / stand-alone training on one device and data-parallel, and prints
what tests/test_distribute.py compares, as one JSON line.

A process of its own: logical CPU devices must be configured before TensorFlow
initialises its devices, which a pytest process has long done.

  python tests/distribute_check.py none,mirrored FOLDER WORKDIR  # two logical CPU devices
  python tests/distribute_check.py multi_worker FOLDER WORKDIR  # a worker (TF_CONFIG set)
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from mixnas_tf import spaces
from mixnas_tf.methods import search
from mixnas_tf.methods import standalone
from mixnas_tf.nn import network
from mixnas_tf.training import distribute
from mixnas_tf.training import trainer as trainer_lib

CONFIGS = "4,3,3;1,1,8"
# Not max-pool: where two pooled values lie within rounding of each other, the one-device
# and the data-parallel run may route a max-pool gradient to different inputs (both
# right), which sets the runs apart by far more than rounding.
DOWNSAMPLE = "avgpool"


def search_config(folder, strategy):
  return search.SearchConfig(
      dataset=f"folder:{folder}", configs=CONFIGS, num_models=2, epochs=2, batch_size=8,
      eval_batch_size=16, train_size=16, val_size=16, learning_rate=0.02,
      downsample=DOWNSAMPLE, progress=False, log_every=2, jit_compile=False, seed=3,
      strategy=strategy)


def standalone_config(folder, strategy):
  return standalone.StandaloneConfig(
      dataset=f"folder:{folder}", config="4,3,3", epochs=1, batch_size=8, eval_batch_size=8,
      train_size=16, test_size=16, learning_rate=0.02, downsample=DOWNSAMPLE,
      progress=False, log_every=2, jit_compile=False, seed=1, strategy=strategy)


def checkpoint_values(workdir):
  """Every variable of the run's last checkpoint, as lists."""
  with open(os.path.join(workdir, "state.json")) as f:
    name = json.load(f)["checkpoint"]
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", name))
  return {key: reader.get_tensor(key).tolist()
          for key in sorted(reader.get_variable_to_shape_map())
          if key.startswith("trainer/") and "OPTIMIZER_SLOT" not in key}


def trainer_steps(strategy, steps=2):
  """Train steps of a K = 2 batch-statistics network on fixed data, directly on a
  Trainer: its weights after them, and whether every replica's copies are identical."""
  tf.keras.utils.set_random_seed(0)
  with distribute.scope(strategy):
    config = spaces.parse_config(spaces.get_space("resnet20"), "4,3,3")
    model = network.SwitchableResNet(space="resnet20", configs=[config], num_models=2,
                                     num_classes=3, batchnorm="batch_stats",
                                     downsample=DOWNSAMPLE)
  trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10,
                                jit_compile=False, strategy=strategy)
  rng = np.random.default_rng(0)
  losses = []
  for step in range(steps):
    images = tf.constant(rng.integers(0, 255, (8, 32, 32, 3)), tf.uint8)
    labels = tf.constant(rng.integers(0, 3, 8), tf.int32)
    out = trainer.train_step(model.configs[0], tf.constant(step % 2), images, labels)
    losses.append(float(out["loss"]))
  identical = all(_same_copies(v) for v in
                  list(model.variables) + list(trainer.optimizer.slots) + [trainer.step])
  return {"losses": losses, "identical": identical,
          "weights": [v.numpy().tolist() for v in model.trainable_variables]}


def _same_copies(variable) -> bool:
  """Whether every replica's copy of a (mirrored) variable holds the same values."""
  variable = getattr(variable, "value", variable) if hasattr(variable, "path") else variable
  copies = [c.numpy() for c in getattr(variable, "values", [variable])]
  return all(np.array_equal(c, copies[0]) for c in copies)


def summary(search_dir, standalone_dir, search_results, metrics):
  return {"search": {"results": search_results, "variables": checkpoint_values(search_dir)},
          "standalone": {"metrics": metrics, "variables": checkpoint_values(standalone_dir)}}


def run(modes, folder, workdir):
  out = {}
  for i, mode in enumerate(modes):
    strategy = distribute.make(mode)
    search_dir = os.path.join(workdir, f"{i}_{mode}", "search")
    standalone_dir = os.path.join(workdir, f"{i}_{mode}", "standalone")
    results = search.run_search(search_config(folder, mode), search_dir)
    metrics = standalone.train_standalone(standalone_config(folder, mode), standalone_dir)
    key = mode if mode not in out else f"{mode}{i}"
    # A multi-worker run's other workers wrote to directories of their own.
    out[key] = summary(distribute.run_workdir(strategy, search_dir),
                       distribute.run_workdir(strategy, standalone_dir), results, metrics)
    out[key + "_replicas"] = distribute.replicas(strategy)
    out[key + "_chief"] = distribute.is_chief(strategy)
    if mode != "multi_worker":  # One device per worker: nothing more to see there.
      out[key + "_trainer"] = trainer_steps(strategy)
  return out


def main():
  modes, folder, workdir = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
  if "mirrored" in modes:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  print("RESULT " + json.dumps(run(modes, folder, workdir), default=str), flush=True)


if __name__ == "__main__":
  main()
