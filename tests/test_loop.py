"""The compiled steps: slice-only updates, exact SGD math, sampling, traces vs K."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.methods import mixture
from mixnas_tf.nn import network
from mixnas_tf.training import checkpoint
from mixnas_tf.training import optim
from mixnas_tf.training import pace
from mixnas_tf.training import runtime
from mixnas_tf.training import trainer as trainer_lib

SPACE = spaces.get_space("resnet20")
CONFIGS = spaces.parse_configs(SPACE, "4,3,3;5,3,2;1,1,8")


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)),
          tf.constant(rng.integers(0, 10, n).astype(np.int32)))


def test_sliced_sgd_matches_pytorch_semantics_on_one_slice():
  var = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4))

  class Holder:  # SlicedSGD reads `.value` and `.path` like a Keras variable.
    value = var
    shape = var.shape
    path = "w"

  opt = optim.SlicedSGD([Holder], momentum=0.9, weight_decay=0.1)
  grad = tf.IndexedSlices(tf.ones((1, 4)), tf.constant([1]), tf.constant([3, 4]))
  opt.apply([grad], tf.constant(1), tf.constant(0.5))
  w1 = np.arange(4, 8, dtype=np.float32)
  buf = 1.0 + 0.1 * w1  # buf = 0.9 * 0 + (g + wd * w)
  np.testing.assert_allclose(var.numpy()[1], w1 - 0.5 * buf, rtol=1e-6)
  np.testing.assert_array_equal(var.numpy()[[0, 2]], np.arange(12).reshape(3, 4)[[0, 2]])
  w2 = var.numpy()[1].copy()
  opt.apply([grad], tf.constant(1), tf.constant(0.5))
  buf2 = 0.9 * buf + (1.0 + 0.1 * w2)
  np.testing.assert_allclose(var.numpy()[1], w2 - 0.5 * buf2, rtol=1e-6)
  assert np.all(opt.slots[0].numpy()[[0, 2]] == 0)
  # A masked (overflowed float16) step changes nothing.
  before = var.numpy().copy()
  opt.apply([grad], tf.constant(1), tf.constant(0.5), apply_mask=tf.constant(False))
  np.testing.assert_array_equal(var.numpy(), before)


def test_learning_rate_schedules():
  lr = lambda step, **kw: float(optim.schedule(total_steps=100, base=0.1, **kw)(step))
  assert lr(0, schedule="cosine", minimum=0.001) == pytest.approx(0.1)
  assert lr(50, schedule="cosine", minimum=0.001) == pytest.approx(0.0505)
  assert lr(100, schedule="cosine", minimum=0.001) == pytest.approx(0.001)
  assert lr(200, schedule="cosine", minimum=0.001) == pytest.approx(0.001)
  assert lr(49, schedule="step") == pytest.approx(0.1)
  assert lr(50, schedule="step") == pytest.approx(0.01)
  assert lr(75, schedule="step") == pytest.approx(0.001)
  assert lr(75, schedule="step", boundaries=(0.755,)) == pytest.approx(0.1)
  assert lr(tf.constant(76, tf.int64), schedule="step", boundaries=(0.755,)) == \
      pytest.approx(0.01)
  # Warm-up: Keras' linear ramp from 0 (CosineDecay's own for cosine, then the cosine over
  # the remaining steps), the same ramp for the other schedules.
  assert lr(1, schedule="constant", warmup_steps=4) == pytest.approx(0.025)
  assert lr(2, schedule="step", warmup_steps=4) == pytest.approx(0.05)
  assert lr(2, schedule="cosine", warmup_steps=4) == pytest.approx(0.05)
  assert lr(4, schedule="cosine", warmup_steps=4, minimum=0.001) == pytest.approx(0.1)
  assert lr(52, schedule="cosine", warmup_steps=4, minimum=0.001) == pytest.approx(0.0505)
  assert lr(100, schedule="cosine", warmup_steps=4, minimum=0.001) == pytest.approx(0.001)
  with pytest.raises(ValueError, match="Received: schedule='linear'"):
    lr(0, schedule="linear")


def test_dynamic_loss_scale():
  scale = optim.DynamicLossScale(initial_scale=8.0, period=2)
  scale.update(tf.constant(False))
  assert float(scale.scale) == 4.0
  scale.update(tf.constant(True))
  scale.update(tf.constant(True))
  assert float(scale.scale) == 8.0 and int(scale.good_steps) == 0


def test_sampling_follows_the_balanced_assignment():
  state = trainer_lib.MixtureState(num_configs=2, num_models=3, seed=5)
  scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.4]])
  state.scores.assign(scores)
  state.temperature.assign(3.0)
  divisor = mixture.epoch_balance(scores, 3.0)
  state.log_divisor.assign(np.log(divisor))
  expected = mixture.assignment_probs(scores, 3.0, divisor)
  np.testing.assert_allclose(state.probs(1).numpy(), expected[1], rtol=1e-5)
  draws = np.array([int(state.sample(1, step)) for step in range(3000)])
  freq = np.bincount(draws, minlength=3) / len(draws)
  np.testing.assert_allclose(freq, expected[1], atol=0.03)
  # Stateless: the same step gives the same draw.
  assert [int(state.sample(1, 17)) for _ in range(3)] == [draws[17]] * 3
  state.update(1, tf.constant(2), tf.constant(0.5))
  assert state.scores.numpy()[1, 2] == pytest.approx(0.9 * 0.4 + 0.1 * 0.5)


def test_single_model_is_always_chosen():
  state = trainer_lib.MixtureState(num_configs=4, num_models=1, seed=0)
  assert float(state.probs(2)[0]) == 1.0
  assert int(state.sample(2, 3)) == 0


def _trainer(num_models, jit_compile=True):
  model = network.SwitchableResNet(configs=CONFIGS, num_models=num_models,
                                  batchnorm="batch_stats")
  return trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10, jit_compile=jit_compile,
                      mixture=trainer_lib.MixtureState(len(CONFIGS), num_models, seed=0))


def test_search_step_trains_only_the_sampled_weight_set_and_scores_it():
  trainer = _trainer(num_models=3, jit_compile=False)
  images, labels = _batch()
  before = [v.numpy().copy() for v in trainer.model.trainable_variables]
  out = trainer.search_step(CONFIGS[1], images, labels, images, labels)
  k = int(out["model"])
  for old, var in zip(before, trainer.model.trainable_variables):
    new = var.numpy()
    for m in range(3):
      assert np.array_equal(old[m], new[m]) == (m != k), var.path
  scores = trainer.mixture.scores.numpy()
  assert scores[1, k] == pytest.approx(0.9 + 0.1 * float(out["val_batch_accuracy"]))
  assert np.sum(scores != 1.0) <= 1
  assert trainer.model_steps.numpy().tolist() == [int(m == k) for m in range(3)]
  assert int(trainer.step) == 1


def test_compiled_functions_do_not_grow_with_k():
  images, labels = _batch(8)
  counts = {}
  for k in (1, 4):
    trainer = _trainer(num_models=k)
    for step in range(6):
      trainer.search_step(CONFIGS[step % 3], images, labels, images, labels)
    for m in range(k):
      trainer.eval_step(CONFIGS[0], tf.constant(m), images, labels, tf.ones(8))
    counts[k] = trainer.trace_counts()
  assert counts[1] == counts[4] == {"train_step": 0, "search_step": 3, "eval_step": 1,
                                    "eval_all_step": 0}


def test_compile_ahead_compiles_concurrently_and_changes_no_state():
  # Two trainers from the same initial weights: one compiles its programs ahead, from
  # two threads (the search's start), the other on first use. They then train alike.
  tf.keras.utils.set_random_seed(0)
  ahead = _trainer(num_models=2)
  lazy = _trainer(num_models=2)
  for a, b in zip(ahead.state_variables(), lazy.state_variables()):
    b.assign(a)
  batch, k = 8, tf.TensorSpec([], tf.int32)
  images = tf.TensorSpec([batch, 32, 32, 3], tf.uint8)
  labels = tf.TensorSpec([batch], tf.int32)
  mask = tf.TensorSpec([batch], tf.float32)
  jobs = [job for c in CONFIGS for job in (
      (ahead.search_step, c, (images, labels, images, labels)),
      (ahead.eval_step, c, (k, images, labels, mask)))]
  for programs, config, specs in jobs:
    programs.trace(config, *specs)
  before = [v.numpy().copy() for v in ahead.state_variables()]
  # Weights, slots, counters, mixture state (its seed included): nothing is left out.
  assert len(before) == len(ahead.model.variables) + len(ahead.optimizer.slots) + 2 + 5
  ahead.compile_ahead(jobs, threads=2)
  for old, var in zip(before, ahead.state_variables()):
    np.testing.assert_array_equal(old, var.numpy(), err_msg=var.name)
  traced = ahead.trace_counts()
  assert traced == {"train_step": 0, "search_step": 3, "eval_step": 3, "eval_all_step": 0}
  for step in range(4):
    x, y = _batch(batch, seed=step)
    outs = [t.search_step(CONFIGS[step % 3], x, y, x, y) for t in (ahead, lazy)]
    assert int(outs[0]["model"]) == int(outs[1]["model"])
    np.testing.assert_allclose(float(outs[0]["loss"]), float(outs[1]["loss"]), rtol=1e-6)
  assert ahead.trace_counts() == traced  # The steps ran the programs compiled ahead.
  for a, b in zip(ahead.state_variables(), lazy.state_variables()):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.name)


def test_train_step_reduces_loss_and_evaluate_counts_classes():
  trainer = _trainer(num_models=2, jit_compile=True)
  images, labels = _batch(32, seed=3)
  losses = [float(trainer.train_step(CONFIGS[0], tf.constant(1), images, labels)["loss"])
            for _ in range(15)]
  assert losses[-1] < losses[0] * 0.7, losses
  mask = tf.constant([1.0] * 30 + [0.0] * 2)
  result = trainer.evaluate(CONFIGS[0], 1, [(images, labels, mask)])
  assert result["count"] == 30
  class_counts = np.bincount(labels.numpy()[:30], minlength=10)
  assert [a is None for a in result["per_class_accuracy"]] == list(class_counts == 0)
  assert 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["loss"])


def test_mixed_float16_step_is_finite():
  import keras  # pylint: disable=g-import-not-at-top
  runtime.set_precision("mixed_float16")
  try:
    model = network.SwitchableResNet(configs=CONFIGS[:1], num_models=2)
    trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10,
                           precision="mixed_float16", jit_compile=True)
    images, labels = _batch(8)
    out = trainer.train_step(CONFIGS[0], tf.constant(0), images, labels)
    assert math.isfinite(float(out["loss"]))
    assert float(trainer.loss_scale.scale) in (2.0**15, 2.0**14)
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_checkpoint_restores_every_variable_of_the_network(tmp_path):
  # Standard BatchNorm, so moving statistics are part of the state as well.
  def build(seed):
    tf.keras.utils.set_random_seed(seed)
    model = network.SwitchableResNet(configs=CONFIGS, num_models=2, batchnorm="standard")
    return trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10, jit_compile=False)

  trained = build(seed=0)
  images, labels = _batch(16, seed=1)
  for _ in range(2):
    trained.train_step(CONFIGS[1], tf.constant(1), images, labels)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), trained)
  for step in range(3):  # tf.train.CheckpointManager numbers them and keeps the last two.
    checkpointer.save({"epoch": 0, "step_in_epoch": step})
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
  assert sorted(f for f in os.listdir(tmp_path / "checkpoints") if f.endswith(".index")) == [
      "ckpt-2.index", "ckpt-3.index"]
  names = {n for n, _ in tf.train.list_variables(str(tmp_path / "checkpoints" / "ckpt-3"))}
  # The blocks' moving statistics are reachable only through the network (the trainable
  # weights also through the optimizer); mixnas_tf 0.1.0 checkpoints lost them.
  assert "trainer/model/block9/bn2/moving_variance/.ATTRIBUTES/VARIABLE_VALUE" in names

  fresh = build(seed=1)  # Different initial weights, which the restore must replace.
  assert not np.array_equal(fresh.model.blocks[4].conv1.kernel.numpy(),
                            trained.model.blocks[4].conv1.kernel.numpy())
  restored = checkpoint.Checkpointer(str(tmp_path), fresh)
  assert restored.restore()["step_in_epoch"] == 2
  assert int(restored.checkpoint.save_counter) == 3  # The numbering resumes.
  assert len(fresh.model.variables) == len(trained.model.variables) > 100
  for a, b in zip(fresh.model.variables, trained.model.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  for a, b in zip(fresh.optimizer.variables, trained.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  np.testing.assert_array_equal(
      fresh.model(images, config=CONFIGS[1], model_index=tf.constant(1)).numpy(),
      trained.model(images, config=CONFIGS[1], model_index=tf.constant(1)).numpy())


def test_checkpoint_missing_network_variables_is_a_usage_error(tmp_path):
  trainer = _trainer(num_models=2, jit_compile=False)
  # A checkpoint that misses the blocks (0.1.0's missed their moving statistics).
  tf.train.Checkpoint(trainer=tf.train.Checkpoint(
      model=tf.train.Checkpoint(stem=trainer.model.stem, head=trainer.model.head))).write(
          str(tmp_path / "checkpoints" / "ckpt-0000-000001"))
  (tmp_path / "state.json").write_text(
      '{"epoch": 0, "step_in_epoch": 1, "checkpoint": "ckpt-0000-000001"}')
  with pytest.raises(errors.UsageError, match="does not hold every variable"):
    checkpoint.Checkpointer(str(tmp_path), trainer).restore()


def test_a_checkpoint_whose_files_are_damaged_or_missing_is_a_usage_error(tmp_path):
  trainer = _trainer(num_models=2, jit_compile=False)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), trainer)
  checkpointer.save({"epoch": 0, "step_in_epoch": 1})
  directory = tmp_path / "checkpoints"
  data = [f for f in os.listdir(directory) if f.startswith("ckpt-1.data")]
  assert data
  with open(directory / data[0], "r+b") as f:  # Truncated, as a lost write leaves it.
    f.truncate(100)
  with pytest.raises(errors.UsageError, match="ckpt-1, which .*state.json names, cannot be "
                     "read"):
    checkpoint.Checkpointer(str(tmp_path), _trainer(num_models=2, jit_compile=False)).restore()
  for f in os.listdir(directory):
    os.remove(directory / f)
  with pytest.raises(errors.UsageError, match="cannot be read"):
    checkpoint.Checkpointer(str(tmp_path), _trainer(num_models=2, jit_compile=False)).restore()


def test_compile_policy():
  assert runtime.compile_policy(True, 36, 96) == (
      True, "XLA: 36 programs per step kind <= 96 live")
  xla, reason = runtime.compile_policy(True, 455, 96)
  assert not xla and reason.startswith("graph mode: 455 configurations exceed")
  assert runtime.compile_policy(False, 3, 96) == (False, "graph mode (--nojit_compile)")


def test_programs_keep_at_most_max_live_and_retrace_evicted_ones():
  calls = []
  programs = trainer_lib.Programs(lambda config, x: calls.append(config) or x * len(config),
                                  jit_compile=False, max_live=2)
  for config in [(1,), (1, 2), (1,), (1, 2, 3), (1, 2)]:
    programs(config, tf.constant(2.0))
  # (1,2) was evicted by (1,2,3) and traced again: 4 traces, 2 alive, 2 evictions.
  assert calls == [(1,), (1, 2), (1, 2, 3), (1, 2)]
  assert (programs.traces, programs.live, programs.evictions) == (4, 2, 2)


def test_evaluate_all_equals_one_set_at_a_time():
  trainer = _trainer(num_models=3, jit_compile=False)
  images, labels = _batch(16, seed=4)
  for step in range(3):
    trainer.train_step(CONFIGS[0], tf.constant(step), images, labels)
  batches = [(images, labels, tf.constant([1.0] * 13 + [0.0] * 3))] * 2
  together = trainer.evaluate_all(CONFIGS[0], batches)
  for k in range(3):
    alone = trainer.evaluate(CONFIGS[0], k, batches)
    assert together[k]["accuracy"] == pytest.approx(alone["accuracy"])
    assert together[k]["loss"] == pytest.approx(alone["loss"], rel=1e-5)
    assert together[k]["count"] == alone["count"] == 26


class _Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_the_eta_counts_only_this_processes_pace():
  clock = _Clock()
  # Resumed at 100 of 400 units: the 100 an earlier sitting did (at whatever pace, however
  # long ago) do not count.
  p = pace.Pace(100, 400, clock=clock)
  assert p.seconds_left(100) is None and p.eta(100) == "ETA unknown"
  clock.now += 50.0  # 50 units in 50 s: 250 left take 250 s.
  assert p.seconds_left(150) == 250.0
  assert p.eta(150) == "ETA 4 min"
  clock.now += 6000.0  # Slower now: 250 units in 6050 s, 50 left.
  assert p.seconds_left(350) == pytest.approx(6050.0 / 250 * 50)
  assert p.eta(350) == "ETA 20 min"
  assert p.seconds_left(400) == 0.0 and p.eta(400) == "ETA 0 min"


def test_durations_read_in_minutes_then_hours():
  assert [pace.format_duration(s) for s in (None, 0.0, 20.0, 60.0, 150.0, 5969.0, 6000.0,
                                            12600.0)] \
      == ["unknown", "0 min", "<1 min", "1 min", "2 min", "99 min", "1.7 h", "3.5 h"]


class _FakeTrainer:
  """evaluate_pairs' view of a trainer: accuracy = the configuration's first digit / 10."""

  class model:  # pylint: disable=invalid-name
    num_models = 2

  def __init__(self):
    self.evaluated = []

  def evaluate_all(self, config, batches):
    del batches
    self.evaluated.append(config)
    return [{"accuracy": config[0] / 10}, {"accuracy": config[0] / 10 + 0.05}]


def test_a_resumed_final_evaluation_counts_what_is_done_and_paces_only_its_own_rows(
    tmp_path, capsys):
  from mixnas_tf.methods import evaluate  # pylint: disable=import-outside-toplevel
  configs = [(1, 0), (2, 0), (3, 0)]
  partial = tmp_path / "eval_partial.json"
  partial.write_text('{"1,0": [0.1, 0.15]}')  # An earlier sitting finished the first row.
  trainer = _FakeTrainer()
  accuracy = evaluate.evaluate_pairs(trainer, configs, lambda row: [0, 1], lambda: [],
                                     partial_path=str(partial), progress=True)
  assert trainer.evaluated == [(2, 0), (3, 0)]
  np.testing.assert_allclose(accuracy, [[0.1, 0.15], [0.2, 0.25], [0.3, 0.35]])
  lines = [l.strip() for l in capsys.readouterr().out.splitlines()]
  assert [l.split(":")[0] for l in lines] == ["evaluated 2/3 2,0", "evaluated 3/3 3,0"]
  # One row of this sitting's left after the first (microseconds here), none after the last.
  assert lines[0].endswith("; ETA <1 min)") and lines[1].endswith("; ETA 0 min)")
  assert json.loads(partial.read_text()) == {"1,0": [0.1, 0.15], "2,0": [0.2, 0.25],
                                             "3,0": [0.3, 0.35]}


def test_every_evaluation_pass_yields_the_datasets_batches_from_one_iterator():
  from mixnas_tf import data  # pylint: disable=import-outside-toplevel
  from mixnas_tf.methods import evaluate  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  split = data.ArraySplit(rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8),
                          rng.integers(0, 3, 10).astype(np.int32), encoded=False)
  one = data.eval_batches(split, batch_size=4, image_size=8)  # 3 batches, 2 padded.
  one_pass = [[t.numpy() for t in batch] for batch in one]
  stream = data.eval_batches(split, batch_size=4, image_size=8, passes=None)
  next_pass = evaluate.passes(stream, data.num_eval_batches(split, 4))
  for _ in range(3):
    again = [[t.numpy() for t in batch] for batch in next_pass()]
    assert len(again) == 3
    for got, want in zip(again, one_pass):
      for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
  # The passes repeat below the parallel map and prefetch, so one iterator of the stream
  # keeps those stages (and their threads) for every pass.
  kinds, node = [], stream
  while node._inputs():  # pylint: disable=protected-access
    kinds.append(type(node).__name__)
    node = node._inputs()[0]  # pylint: disable=protected-access
  assert kinds.index("_RepeatDataset") > kinds.index("_ParallelMapDataset"), kinds
  assert int(data.eval_batches(split, batch_size=4, image_size=8, passes=2).cardinality()) == 6
  with pytest.raises(ValueError, match="endless stream"):
    evaluate.passes(one, 3)
  with pytest.raises(errors.UsageError, match="passes must be a positive integer or None"):
    data.eval_batches(split, batch_size=4, image_size=8, passes=0)


@pytest.mark.parametrize("batches, message, trained", [
    # A tf.data input of known count is checked before the first step.
    (lambda: tf.data.Dataset.range(7), "holds 7 batches; the run's remaining steps are 6",
     []),
    # Any other input that ends early is caught where it ends.
    (lambda: iter(range(4)), "ended after 1 of 3 steps of epoch 1", [0, 1, 2, 3]),
])
def test_the_loop_refuses_an_input_whose_count_is_not_the_runs_steps(tmp_path, batches,
                                                                      message, trained):
  from mixnas_tf.training import loop  # pylint: disable=g-import-not-at-top
  steps = []
  hooks = loop.LoopHooks(batches=lambda epoch, start, epochs: batches(),
                         step=lambda epoch, step, batch: steps.append(int(batch)) or {})
  with pytest.raises(RuntimeError, match=message):
    loop.run_epochs(workdir=str(tmp_path), trainer=_trainer(1, jit_compile=False),
                    hooks=hooks, epochs=2, steps_per_epoch=3, progress=False)
  assert steps == trained



@pytest.mark.parametrize("epochs", [2, 1])
def test_a_stop_during_an_epochs_end_interrupts_after_its_checkpoint(tmp_path, epochs):
  # Even at the last epoch: what follows the loop (a search's final evaluation) can take
  # hours, and the signal must not be forgotten.
  import signal  # pylint: disable=g-import-not-at-top

  from mixnas_tf.training import loop  # pylint: disable=g-import-not-at-top

  def epoch_end(epoch, metrics):
    os.kill(os.getpid(), signal.SIGTERM)
    return {}

  hooks = loop.LoopHooks(batches=lambda epoch, start, epochs: iter(range(3 * epochs)),
                         step=lambda epoch, step, batch: {}, epoch_end=epoch_end)
  trainer = _trainer(1, jit_compile=False)
  assert loop.run_epochs(workdir=str(tmp_path), trainer=trainer, hooks=hooks, epochs=epochs,
                         steps_per_epoch=3, progress=False) == "interrupted"
  state = json.loads((tmp_path / "state.json").read_text())
  assert (state["epoch"], state["step_in_epoch"]) == (1, 0)
