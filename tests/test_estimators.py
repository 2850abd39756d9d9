"""Estimators of a configuration's accuracy from a search's final evaluation: exact values."""

import numpy as np
import pytest

from mixnas_tf.methods import estimators

# 3 configurations x 2 weight sets; set 1 is 0.10 better on every configuration.
ACCURACY = np.array([[0.50, 0.60],
                     [0.40, 0.52],
                     [0.70, 0.78]])
PROBS = np.array([[0.9, 0.1],
                  [0.2, 0.8],
                  [0.6, 0.4]])


def test_exact_values():
  est = lambda name: estimators.estimate(name, ACCURACY, PROBS)
  np.testing.assert_allclose(est("assigned"), [0.50, 0.52, 0.70])
  np.testing.assert_allclose(est("max"), [0.60, 0.52, 0.78])
  np.testing.assert_allclose(est("mean"), [0.55, 0.46, 0.74])
  # Set means 0.5333 and 0.6333, grand mean 0.5833: the assigned set's advantage removed.
  np.testing.assert_allclose(est("centered"), [0.55, 0.47, 0.75])
  # sum_m p (acc - set mean) + grand mean.
  expected = (PROBS * (ACCURACY - ACCURACY.mean(0))).sum(1) + ACCURACY.mean()
  np.testing.assert_allclose(est("weighted"), expected)
  np.testing.assert_allclose(expected, [0.55, 0.466, 0.742], atol=1e-12)


def test_the_paper_estimator_ranks_the_better_set_while_the_others_do_not():
  """The assigned estimate puts configuration 1 (set 1) above configuration 0 (set 0)
  although configuration 0 is better under *both* sets; the set-neutral ones do not."""
  assigned = estimators.estimate("assigned", ACCURACY, PROBS)
  assert assigned[1] > assigned[0]
  for name in ("mean", "centered", "weighted"):
    values = estimators.estimate(name, ACCURACY, PROBS)
    assert values[0] > values[1], name


def test_one_weight_set_all_estimators_agree():
  acc = np.array([[0.3], [0.5], [0.4]])
  probs = np.ones_like(acc)
  for name in estimators.ESTIMATORS:
    np.testing.assert_allclose(estimators.estimate(name, acc, probs), acc[:, 0])


def test_chosen_models():
  np.testing.assert_array_equal(estimators.chosen_models("max", ACCURACY, PROBS), [1, 1, 1])
  np.testing.assert_array_equal(estimators.chosen_models("mean", ACCURACY, PROBS), [0, 1, 0])


def test_bad_input():
  partial = ACCURACY.copy()
  partial[0, 1] = np.nan
  np.testing.assert_allclose(estimators.estimate("assigned", partial, PROBS)[0], 0.5)
  for name in estimators.NEEDS_ALL_PAIRS:
    with pytest.raises(ValueError, match="--final_eval=all_pairs"):
      estimators.estimate(name, partial, PROBS)
  with pytest.raises(ValueError, match="estimator must be one of"):
    estimators.estimate("median", ACCURACY, PROBS)
  with pytest.raises(ValueError, match=r"\[C, K\]"):
    estimators.estimate("mean", ACCURACY, PROBS[:2])
  not_evaluated = ACCURACY.copy()
  not_evaluated[1, 1] = np.nan
  with pytest.raises(ValueError, match="assigned weight set"):
    estimators.estimate("assigned", not_evaluated, PROBS)


def test_auto_resolves_to_centered_only_with_every_pair_and_several_sets():
  assert estimators.resolve("auto", all_pairs=True, num_models=4) == "centered"
  assert estimators.resolve("auto", all_pairs=False, num_models=4) == "assigned"
  assert estimators.resolve("auto", all_pairs=True, num_models=1) == "assigned"
  for name in estimators.ESTIMATORS:  # A named estimator is kept as it is.
    assert estimators.resolve(name, all_pairs=False, num_models=4) == name


def test_auto_under_a_per_set_budget_is_its_own_choice(monkeypatch):
  monkeypatch.setattr(estimators, "AUTO_PER_SET", "mean")
  assert estimators.resolve("auto", True, 4, budget="per_set") == "mean"
  assert estimators.resolve("auto", True, 4, budget="total") == estimators.AUTO_ALL_PAIRS
  assert estimators.resolve("auto", False, 4, budget="per_set") == "assigned"
  assert estimators.resolve("auto", True, 1, budget="per_set") == "assigned"
  assert estimators.resolve("max", True, 4, budget="per_set") == "max"


def test_an_estimate_of_zero_ranks_by_itself_not_by_its_score():
  from mixnas_tf import spaces
  from mixnas_tf.methods import evaluate
  space = spaces.get_space("resnet20")
  configs = spaces.parse_configs(space, "4,3,3;5,3,2;1,1,8")
  # One weight set: estimates 0.0, 0.5 and none (left out of the final evaluation); the
  # collapsed configuration's score (1.0) is the highest, and must not lift it.
  accuracy = np.array([[0.0], [0.5], [np.nan]])
  probs = np.ones((3, 1))
  scores = np.array([[1.0], [0.5], [0.9]])
  records = evaluate.rank_results(space, configs, accuracy, probs, scores, "assigned",
                                  image_size=32, downsample="maxpool", num_classes=10)
  assert [(r["stages"], r["estimated_accuracy"], r["rank"]) for r in records] == [
      ([5, 3, 2], 0.5, 1), ([4, 3, 3], 0.0, 2), ([1, 1, 8], None, None)]
