"""Tests for mixnas_tf.mixture: exact values of the balancing algorithm."""

import math

import numpy as np
import pytest

from mixnas_tf.methods import mixture as mx


def _random_cases(seed=0, count=20):
  """Yields (scores [36, M], temperature) with M in 2..8 and T up to 100."""
  rng = np.random.default_rng(seed)
  temperatures = [1.0, 5.0, 20.0, 50.0, 100.0]
  for i in range(count):
    num_models = int(rng.integers(2, 9))
    # Accuracy-like scores in [0, 1], as the EMA of batch accuracies gives.
    scores = rng.uniform(0.0, 1.0, size=(36, num_models))
    yield scores, temperatures[i % len(temperatures)]


def test_softmax_is_stable_and_normalised():
  x = np.array([[1000.0, 1000.0], [0.0, math.log(3.0)], [-1e4, 0.0]])
  p = mx.softmax(x)
  np.testing.assert_allclose(p[0], [0.5, 0.5], rtol=0, atol=1e-15)
  np.testing.assert_allclose(p[1], [0.25, 0.75], rtol=0, atol=1e-15)
  np.testing.assert_array_equal(p[2], [0.0, 1.0])
  np.testing.assert_allclose(mx.softmax(x.T, axis=0), p.T)


def test_balance_gives_uniform_marginals():
  for scores, temperature in _random_cases():
    p = mx.softmax(temperature * scores)
    balanced, divisor = mx.balance(p)
    num_models = scores.shape[1]
    assert balanced.shape == p.shape
    assert divisor.shape == (num_models,)
    np.testing.assert_allclose(balanced.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert mx.kl_to_uniform(mx.model_shares(balanced)) <= 1e-4
    # The input is left alone.
    np.testing.assert_array_equal(p, mx.softmax(temperature * scores))


def test_balance_of_sharply_unbalanced_matrix():
  # Model 0 wins 35 of 36 configurations by a wide margin at T=100.
  scores = np.zeros((36, 2))
  scores[:35, 0] = 0.9
  scores[35, 1] = 0.9
  balanced, _ = mx.balance(mx.softmax(100.0 * scores))
  assert mx.kl_to_uniform(mx.model_shares(balanced)) <= 1e-4


def test_many_divisions_keep_the_divisor_representable():
  # Each division multiplies the running product of column means by about 1/M, so 600
  # divisions at M = 4 (0.25**600 = 0.0 in float64) would leave a divisor of 0 and NaN
  # probabilities. tol < 0 is never met, so every one of max_iters divisions runs.
  scores = np.random.default_rng(5).uniform(0.5, 0.9, size=(36, 4))
  p = mx.softmax(30.0 * scores)
  with pytest.warns(RuntimeWarning, match="max_iters=600"):
    balanced, divisor = mx.balance(p, tol=-1.0, max_iters=600)
  assert divisor.min() > 0.0
  assert divisor.max() == 1.0
  np.testing.assert_allclose(mx.assignment_probs(scores, 30.0, divisor),
                             balanced, rtol=0, atol=1e-12)
  assert mx.kl_to_uniform(mx.model_shares(balanced)) <= 1e-12


def test_the_divisor_of_an_eight_set_search_at_t_300_stays_positive():
  # Random score matrices like a late Food101 search's (M = 8, T = 300; 10% of pairs never
  # visited keep their initial 1.0): before the divisor was rescaled, about 1 in 1,000
  # balanced to a divisor with exact zeros (this seed's draw 233).
  rng = np.random.default_rng(0)
  for _ in range(234):
    scores = rng.uniform(0.6, 0.9, (36, 8)) + rng.normal(0, 0.03, 8)
    scores[rng.random((36, 8)) < 0.1] = 1.0
  divisor = mx.epoch_balance(scores, 300.0)
  assert divisor.min() > 0.0
  assert divisor.max() == 1.0
  probs = mx.assignment_probs(scores, 300.0, divisor)
  assert np.all(np.isfinite(probs))
  assert mx.kl_to_uniform(mx.model_shares(probs)) <= 1e-4


@pytest.mark.parametrize("p", [
    np.full((36, 4), 0.25),
    # Block structure: each model owns 9 configurations, equal column sums.
    np.kron(np.eye(4), np.ones((9, 1))) * 0.7 + 0.3 / 4,
])
def test_balanced_matrix_is_unchanged(p):
  np.testing.assert_allclose(p.sum(axis=1), 1.0)
  balanced, divisor = mx.balance(p)
  np.testing.assert_array_equal(balanced, p)
  np.testing.assert_array_equal(divisor, np.ones(4))


def test_single_model_is_all_ones():
  scores = np.random.default_rng(1).uniform(size=(36, 1))
  divisor = mx.epoch_balance(scores, temperature=100.0)
  np.testing.assert_array_equal(divisor, [1.0])
  probs = mx.assignment_probs(scores, 100.0, divisor)
  np.testing.assert_array_equal(probs, np.ones((36, 1)))
  balanced, _ = mx.balance(mx.softmax(100.0 * scores))
  np.testing.assert_array_equal(balanced, np.ones((36, 1)))


def test_assignment_probs_reapplies_the_epoch_divisions():
  for scores, temperature in _random_cases(seed=2):
    divisor = mx.epoch_balance(scores, temperature)
    balanced, _ = mx.balance(mx.softmax(temperature * scores))
    probs = mx.assignment_probs(scores, temperature, divisor)
    np.testing.assert_allclose(probs, balanced, rtol=0, atol=1e-12)
    # One row at a time (what a training step does) gives the same rows.
    for c in (0, 17, 35):
      np.testing.assert_allclose(
          mx.assignment_probs(scores[c], temperature, divisor), balanced[c],
          rtol=0, atol=1e-12)


def test_assignment_probs_with_unit_divisor_is_softmax():
  scores = np.random.default_rng(3).uniform(size=(36, 3))
  np.testing.assert_allclose(
      mx.assignment_probs(scores, 7.0, np.ones(3)), mx.softmax(7.0 * scores),
      rtol=0, atol=1e-15)
  with pytest.raises(ValueError, match="divisor"):
    mx.assignment_probs(scores, 7.0, np.ones(4))


def test_balance_rejects_bad_input():
  with pytest.raises(ValueError, match="row-stochastic"):
    mx.balance(np.full((3, 2), 0.4))
  with pytest.raises(ValueError, match="shape"):
    mx.balance(np.full(4, 0.25))
  with pytest.raises(ValueError, match="positive entry"):
    mx.balance(np.array([[1.0, 0.0], [1.0, 0.0]]))


def test_balance_warns_when_out_of_iterations():
  p = mx.softmax(100.0 * np.random.default_rng(4).uniform(size=(36, 4)))
  with pytest.warns(RuntimeWarning, match="max_iters=1"):
    mx.balance(p, max_iters=1)


def test_temperature_schedule():
  assert mx.temperature(0, 100, 100.0) == 1.0
  assert mx.temperature(99, 100, 100.0) == 100.0
  assert mx.temperature(5, 11, 21.0) == 11.0  # Midpoint: (1 + 21) / 2.
  assert mx.temperature(0, 1, 100.0) == 1.0  # One epoch: start of schedule.
  for epoch, num_epochs in ((-1, 10), (10, 10)):
    with pytest.raises(ValueError, match="epoch"):
      mx.temperature(epoch, num_epochs, 100.0)
  with pytest.raises(ValueError, match="num_epochs"):
    mx.temperature(0, 0, 100.0)


def test_ema_update_changes_one_entry():
  scores = mx.initial_scores(36, 4)
  new = mx.ema_update(scores, 5, 2, 0.5)
  # Bit-exact against the formula; (1 - 0.9) is not exactly 0.1 in floats.
  assert new[5, 2] == 0.9 * 1.0 + (1.0 - 0.9) * 0.5
  assert new[5, 2] == pytest.approx(0.95, abs=1e-15)
  mask = np.ones_like(new, dtype=bool)
  mask[5, 2] = False
  np.testing.assert_array_equal(new[mask], 1.0)
  np.testing.assert_array_equal(scores, 1.0)  # Not updated in place.
  assert mx.ema_update(scores, 0, 0, 0.0, decay=0.5)[0, 0] == 0.5
  with pytest.raises(ValueError, match="accuracy"):
    mx.ema_update(scores, 0, 0, 1.5)


def test_initial_scores():
  scores = mx.initial_scores(36, 4)
  assert scores.shape == (36, 4)
  assert scores.dtype == np.float64
  np.testing.assert_array_equal(scores, 1.0)


@pytest.mark.parametrize("num_models", range(1, 9))
def test_entropy_and_shares_at_initialisation(num_models):
  scores = mx.initial_scores(36, num_models)
  probs = mx.assignment_probs(scores, 1.0,
                              mx.epoch_balance(scores, temperature=1.0))
  # Uniform assignment: entropy log(M) up to float rounding, shares 1/M.
  assert mx.assignment_entropy(probs) == pytest.approx(
      math.log(num_models), rel=1e-14, abs=1e-15)
  np.testing.assert_allclose(mx.model_shares(probs), 1.0 / num_models,
                             rtol=1e-14)


def test_shares_of_balanced_matrix_are_uniform():
  for scores, temperature in _random_cases(seed=5, count=5):
    balanced, _ = mx.balance(mx.softmax(temperature * scores), tol=1e-12)
    num_models = scores.shape[1]
    np.testing.assert_allclose(mx.model_shares(balanced), 1.0 / num_models,
                               rtol=1e-5)


def test_entropy_of_one_hot_is_zero():
  probs = np.eye(4)[[0, 1, 2, 3, 0]]
  assert mx.assignment_entropy(probs) == 0.0
  np.testing.assert_array_equal(mx.assigned_models(probs), [0, 1, 2, 3, 0])


def test_assigned_models_takes_argmax_and_lowest_on_ties():
  probs = np.array([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4], [0.1, 0.1, 0.8]])
  np.testing.assert_array_equal(mx.assigned_models(probs), [1, 0, 2])


def test_specialisation_of_the_weight_sets_exactly():
  # Rows: configurations; columns: sets. Row 0 belongs to set 0 and is 0.3 better there;
  # row 1 to set 1 (+0.3); row 2 to set 0 but equal under both (tie: lowest set).
  accuracy = np.array([[0.8, 0.5], [0.4, 0.7], [0.6, 0.6]])
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
  out = mx.specialisation(accuracy, probs)
  assert out["own_minus_others"] == pytest.approx(0.2)
  assert out["own_minus_others_se"] == pytest.approx(np.std([0.3, 0.3, 0.0], ddof=1) / 3**0.5)
  assert out["own_is_best"] == 1.0
  assert out["hardness"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
  assert out["configs_per_set"] == [2, 1]
  # A set better on every configuration by 0.2 is not specialised: its advantage shows in
  # own_minus_others (for its configurations) and is removed in set_advantage_removed.
  better = np.array([[0.7, 0.5], [0.7, 0.5], [0.6, 0.4], [0.6, 0.4]])
  assigned = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
  out = mx.specialisation(better, assigned)
  assert out["own_minus_others"] == pytest.approx(0.0)  # +0.2, +0.2, -0.2, -0.2.
  assert out["set_advantage_removed"] == pytest.approx(0.0)
  assert out["own_is_best"] == 0.5 and out["configs_per_set"] == [2, 2]
  with pytest.raises(ValueError, match="every pair of K >= 2"):
    mx.specialisation(accuracy[:, :1], probs[:, :1])
  with pytest.raises(ValueError, match="NaN: True"):
    mx.specialisation(np.array([[0.5, np.nan], [0.5, 0.5]]), probs[:2])
