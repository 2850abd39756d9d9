"""The mixture's mechanics, exactly: K stacked weight sets train like K separate networks.

A bug in stacked weights, the sliced SGD (momentum per set), per-set BatchNorm, gradient
slicing, the per-set learning rate or the forced sampling would make a K-set SuperNet
train differently from K one-set SuperNets fed the same steps. These tests compare the
two, number by number.
"""

import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import spaces
from mixnas_tf.nn import network
from mixnas_tf.training import trainer as trainer_lib

SPACE = spaces.get_space("resnet20")
CONFIGS = spaces.parse_configs(SPACE, "4,3,3;1,1,8;8,1,1")
STEPS = 6


def _batches(n, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return [(tf.constant(rng.integers(0, 256, (size, 32, 32, 3)).astype(np.uint8)),
           tf.constant(rng.integers(0, 10, size).astype(np.int32))) for _ in range(n)]


def _trainer(num_models, batchnorm, jit_compile, configs=CONFIGS, mixture=False,
             total_steps=STEPS, learning_rate=0.1):
  model = network.SwitchableResNet(configs=configs, num_models=num_models,
                                  batchnorm=batchnorm)
  optim_config = trainer_lib.OptimConfig(learning_rate=learning_rate, min_learning_rate=0.001,
                                  schedule="cosine", momentum=0.9, weight_decay=5e-4)
  state = trainer_lib.MixtureState(len(configs), num_models, seed=3) if mixture else None
  return trainer_lib.Trainer(model, optim_config, total_steps=total_steps, jit_compile=jit_compile,
                      mixture=state)


def _all_variables(trainer):
  """The network's variables (trainable and BatchNorm statistics) in a fixed order."""
  return list(trainer.model.trainable_variables) + list(
      trainer.model.non_trainable_variables)


def _copy_slice(source, m, target):
  """Sets every variable of the one-set `target` to slice m of `source`'s."""
  pairs = list(zip(_all_variables(source), _all_variables(target)))
  # Paths differ only in the model's own (uniquified) name.
  assert pairs and all(a.path.split("/", 1)[1] == b.path.split("/", 1)[1] for a, b in pairs)
  for a, b in pairs:
    b.assign(a.numpy()[m:m + 1])


def _slices(trainer, m):
  return [v.numpy()[m] for v in _all_variables(trainer)]


@pytest.mark.parametrize("batchnorm,jit_compile", [
    ("batch_stats", False), ("standard", False), ("batch_stats", True)])
def test_a_set_trained_alone_equals_a_one_set_network(batchnorm, jit_compile):
  """Every step on set m: set m follows a K=1 run step for step; the others never move."""
  m = 2
  mix = _trainer(4, batchnorm, jit_compile)
  single = _trainer(1, batchnorm, jit_compile)
  _copy_slice(mix, m, single)
  untouched = {k: _slices(mix, k) for k in range(4) if k != m}
  configs = [CONFIGS[i % len(CONFIGS)] for i in range(STEPS)]
  for config, (images, labels) in zip(configs, _batches(STEPS)):
    a = mix.train_step(config, tf.constant(m), images, labels)
    b = single.train_step(config, tf.constant(0), images, labels)
    np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-4)
    np.testing.assert_allclose(float(a["learning_rate"]), float(b["learning_rate"]))
  for a, b, var in zip(_slices(mix, m), _slices(single, 0), _all_variables(mix)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=var.path)
  # Momentum buffers: slice m equals the one-set buffer, the others stay zero.
  for slot_mix, slot_single in zip(mix.optimizer.slots, single.optimizer.slots):
    np.testing.assert_allclose(slot_mix.numpy()[m], slot_single.numpy()[0],
                               rtol=1e-4, atol=1e-5)
    assert not np.any(np.delete(slot_mix.numpy(), m, axis=0))
  for k, before in untouched.items():
    for old, new, var in zip(before, _slices(mix, k), _all_variables(mix)):
      np.testing.assert_array_equal(old, new, err_msg=f"set {k}: {var.path}")
  assert mix.model_steps.numpy().tolist() == [STEPS if k == m else 0 for k in range(4)]


def test_search_step_forced_to_one_set_equals_a_one_set_network():
  """The compiled search step (sampling, training, validation forward, score update)
  with p(m | c) = 1 for one set trains that set exactly like a K=1 run."""
  m = 1
  # Random images and labels make the loss jump (to ~10 within 6 steps at 0.1), and such
  # steps amplify a last-bit difference between the two programs' kernels (which depends
  # on how the graph happens to be built: identical before the schedules moved to Keras,
  # 1e-4 apart after) past a float tolerance. A gentler rate, and tolerances a mechanics
  # bug (a wrong slice, a shared momentum buffer) would still exceed by orders of magnitude.
  tf.keras.utils.set_random_seed(0)
  mix = _trainer(3, "batch_stats", jit_compile=False, mixture=True, learning_rate=0.01)
  single = _trainer(1, "batch_stats", jit_compile=False, mixture=True, learning_rate=0.01)
  _copy_slice(mix, m, single)
  # Scores make set m certain for every configuration (T * gap = 1000 * 0.5).
  scores = np.zeros([len(CONFIGS), 3], np.float32)
  scores[:, m] = 1.0
  mix.mixture.scores.assign(scores)
  mix.mixture.temperature.assign(1000.0)
  batches = _batches(2 * STEPS, seed=1)
  for i in range(STEPS):
    config = CONFIGS[i % len(CONFIGS)]
    (x, y), (vx, vy) = batches[2 * i], batches[2 * i + 1]
    a = mix.search_step(config, x, y, vx, vy)
    b = single.search_step(config, x, y, vx, vy)
    assert int(a["model"]) == m and int(b["model"]) == 0
    np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-4)
    assert float(a["val_batch_accuracy"]) == float(b["val_batch_accuracy"])
  for a, b in zip(_slices(mix, m), _slices(single, 0)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
  # The score column of set m follows the one-set run's (same EMA of the same accuracies).
  got = mix.mixture.scores.numpy()[:, m]
  expected = single.mixture.scores.numpy()[:, 0]
  visited = [CONFIGS.index(CONFIGS[i % len(CONFIGS)]) for i in range(STEPS)]
  np.testing.assert_allclose(got[visited], expected[visited], rtol=1e-6)


def test_a_fixed_partition_equals_separate_runs_on_the_subsets():
  """Configurations split among 3 sets (no balancing): each set ends where a one-set
  network trained on its own configurations' steps ends, at the same learning rates."""
  partition = {CONFIGS[0]: 0, CONFIGS[1]: 1, CONFIGS[2]: 2}
  order = [CONFIGS[i] for i in (0, 1, 2, 2, 0, 1, 1, 0)]
  mix = _trainer(3, "standard", jit_compile=False, total_steps=len(order))
  singles = [_trainer(1, "standard", jit_compile=False, total_steps=len(order))
             for _ in range(3)]
  for k, single in enumerate(singles):
    _copy_slice(mix, k, single)
  for step, (config, (x, y)) in enumerate(zip(order, _batches(len(order), seed=2))):
    k = partition[config]
    singles[k].step.assign(step)  # The schedule is one clock for every set, as in a search.
    a = mix.train_step(config, tf.constant(k), x, y)
    b = singles[k].train_step(config, tf.constant(0), x, y)
    np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-4)
  for k, single in enumerate(singles):
    for a, b, var in zip(_slices(mix, k), _slices(single, 0), _all_variables(mix)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"set {k}: {var.path}")
  assert mix.model_steps.numpy().tolist() == [3, 3, 2]


def test_copy_weight_set_splits_every_set_from_one():
  trainer = _trainer(3, "standard", jit_compile=False)
  for x, y in _batches(2, seed=4):
    trainer.train_step(CONFIGS[0], tf.constant(0), x, y)
  trainer.copy_weight_set(0)
  for var in _all_variables(trainer) + list(trainer.optimizer.slots):
    value = var.numpy()
    for k in (1, 2):
      np.testing.assert_array_equal(value[k], value[0])
  assert np.any(trainer.optimizer.slots[0].numpy()[2])  # Momentum was copied too.


def test_shared_warmup_forces_set_zero_and_split_copies_the_scores():
  state = trainer_lib.MixtureState(num_configs=2, num_models=3, seed=0, shared=True)
  state.scores.assign([[0.3, 1.0, 1.0], [0.6, 1.0, 1.0]])
  assert {int(state.sample(1, step)) for step in range(50)} == {0}
  state.split_shared()
  np.testing.assert_array_equal(state.scores.numpy(), np.float32([[0.3] * 3, [0.6] * 3]))
  assert len({int(state.sample(1, step)) for step in range(50)}) == 3
  assert not bool(trainer_lib.MixtureState(2, 1, seed=0, shared=True).shared)
