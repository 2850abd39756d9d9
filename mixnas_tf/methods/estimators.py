"""How a search turns its final evaluation into one estimated accuracy per configuration.

After a search, `accuracy[c, m]` is configuration c's search-validation accuracy under
weight set m (NaN where the pair was not evaluated) and `probs[c, m]` is the final balanced
assignment p(m | c). The paper ranks configurations by their accuracy under the assigned
set. But weight sets differ in overall quality (one set can be several points better than
another on *every* configuration, measured in experiments/results/fidelity/), and that
difference leaks into the ranking: a configuration looks good because its set is good.

The estimators (pure numpy, in one registry):

- "assigned": `accuracy[c, argmax_m p(m|c)]` (the paper's).
- "max": `max_m accuracy[c, m]`.
- "mean": `mean_m accuracy[c, m]`: every set votes; a set's overall quality shifts every
  configuration alike, so it cannot reorder them. This is the configuration effect of the
  two-way additive model accuracy = configuration + set (the row mean of the set-centred
  matrix differs from the row mean only by a constant).
- "centered": `accuracy[c, m_c] - (mean_c' accuracy[c', m_c] - grand mean)`: the assigned
  set's accuracy with that set's overall advantage removed.
- "weighted": `sum_m p(m|c) (accuracy[c, m] - set mean[m]) + grand mean`: centred
  accuracies averaged with the assignment's weights, between "centered" and "mean".

"mean", "centered" and "weighted" need every (configuration, set) pair
(`--final_eval=all_pairs`). With K = 1 every estimator equals "assigned" up to a constant.

The default, "auto" (`resolve`), is "centered" when every pair is evaluated and K > 1, and
"assigned" otherwise. Under --budget=per_set (each weight set trained as long as one
SuperNet) the sets specialise more and the case of every pair evaluated and K > 1 is
AUTO_PER_SET, chosen apart by its own rule (experiments/fidelity/README.md). The choice
below is that of --budget=total. Chosen by measurement, by a rule fixed before the last
run was in (experiments/fidelity/choose_estimator.py: the highest mean Kendall tau, ties within 0.02
to the lower mean regret), over the four K = 4 searches the defaults run (one epoch of
learning-rate warm-up; 15 epochs on 15k / 5k images and 20 epochs on the full 25k / 25k,
seeds 0 and 1; experiments/results/fidelity/estimator_choice_defaults.md): "weighted" mean
tau 0.458, "centered" 0.443 (tied; mean regret 1.11 against 1.20), "max" 0.430, "mean"
0.421, "assigned" 0.347. Before those runs, over the paper's method without warm-up
(estimator_choice.md), "mean" had won.
"""

from collections.abc import Callable

import numpy as np

NEEDS_ALL_PAIRS = ("mean", "centered", "weighted")
AUTO = "auto"
# What "auto" is when every (configuration, set) pair is evaluated and K > 1: at
# --budget=total (the weight sets share K = 1's compute) and at --budget=per_set (each set
# gets K = 1's compute; chosen apart, by the rule in experiments/fidelity/README.md).
AUTO_ALL_PAIRS = "centered"
AUTO_PER_SET = "centered"


def _assigned(accuracy: np.ndarray, probs: np.ndarray) -> np.ndarray:
  return np.argmax(probs, axis=1)


def _set_means(accuracy: np.ndarray) -> tuple[np.ndarray, float]:
  set_means = np.mean(accuracy, axis=0)
  return set_means, float(np.mean(set_means))


def assigned(accuracy: np.ndarray, probs: np.ndarray) -> np.ndarray:
  rows = np.arange(accuracy.shape[0])
  return accuracy[rows, _assigned(accuracy, probs)]


def best(accuracy: np.ndarray, probs: np.ndarray) -> np.ndarray:
  del probs
  return np.nanmax(accuracy, axis=1)


def mean(accuracy: np.ndarray, probs: np.ndarray) -> np.ndarray:
  del probs
  return np.mean(accuracy, axis=1)


def centered(accuracy: np.ndarray, probs: np.ndarray) -> np.ndarray:
  set_means, grand = _set_means(accuracy)
  m = _assigned(accuracy, probs)
  return accuracy[np.arange(accuracy.shape[0]), m] - (set_means[m] - grand)


def weighted(accuracy: np.ndarray, probs: np.ndarray) -> np.ndarray:
  set_means, grand = _set_means(accuracy)
  return np.sum(probs * (accuracy - set_means[None, :]), axis=1) + grand


ESTIMATORS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "assigned": assigned,
    "max": best,
    "mean": mean,
    "centered": centered,
    "weighted": weighted,
}


def resolve(name: str, all_pairs: bool, num_models: int, budget: str = "total") -> str:
  """The estimator a search uses: `name`, or for "auto", when every (configuration, set)
  pair is evaluated and there are several sets, AUTO_PER_SET under `budget` "per_set" and
  AUTO_ALL_PAIRS otherwise; "assigned" when pairs are missing or K = 1."""
  if name != AUTO:
    return name
  if not all_pairs or num_models < 2:
    return "assigned"
  return AUTO_PER_SET if budget == "per_set" else AUTO_ALL_PAIRS


def estimate(name: str, accuracy, probs) -> np.ndarray:
  """Estimated accuracy [C] of each configuration by estimator `name`.

  Args:
    name: one of ESTIMATORS.
    accuracy: [C, K] accuracies, NaN for pairs not evaluated.
    probs: [C, K] final assignment p(m | c), rows sum to 1.

  Raises:
    ValueError: unknown name, mismatched shapes, or an all-pairs estimator with missing
      pairs.
  """
  if name not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}. "
                     f"Received: {name!r}")
  accuracy = np.asarray(accuracy, dtype=np.float64)
  probs = np.asarray(probs, dtype=np.float64)
  if accuracy.ndim != 2 or accuracy.shape != probs.shape:
    raise ValueError(f"accuracy and probs must both be [C, K]. Received: "
                     f"{accuracy.shape} and {probs.shape}")
  if name in NEEDS_ALL_PAIRS and np.isnan(accuracy).any():
    raise ValueError(f"estimator {name!r} needs every (configuration, weight set) pair "
                     "evaluated (--final_eval=all_pairs)")
  if name == "assigned":
    values = assigned(accuracy, probs)
    if np.isnan(values).any():
      raise ValueError("the assigned weight set of a configuration was not evaluated")
    return values
  return ESTIMATORS[name](accuracy, probs)


def chosen_models(name: str, accuracy, probs) -> np.ndarray:
  """The weight set [C] whose network an estimator's choice is (for retraining notes and
  export): the best set for "max", the assigned set otherwise."""
  accuracy = np.asarray(accuracy, dtype=np.float64)
  if name == "max":
    return np.nanargmax(accuracy, axis=1)
  return np.argmax(np.asarray(probs), axis=1)
