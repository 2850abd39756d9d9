"""The balanced mixture of M SuperNets: scores, balancing and temperature.

Javan, Toews, Pedersoli, "Balanced Mixture of SuperNets for Learning the CNN
Pooling Architecture" (AutoML 2023). A score matrix W, shape [C, M] (C
configurations, M SuperNets), holds an exponential moving average of each
(configuration, model) pair's validation accuracy. Once per epoch,
P = softmax(T * W) over models is balanced by iterative proportional fitting
so that every model receives the same expected share of configurations, and
the per-model divisions are remembered. At each step, the current scores of
the sampled configuration are turned into p(m | c) with those divisions
re-applied (`assignment_probs`).

These are pure numpy functions in float64. The TF training step
re-implements `assignment_probs` and the sampling in TensorFlow so that they
can run inside an XLA-compiled step; this module is the reference that
implementation is tested against.
"""

import warnings

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """Numerically stable softmax.

  Args:
    x: Logits, any shape.
    axis: The axis that sums to 1.

  Returns:
    float64 probabilities, the shape of `x`.
  """
  x = np.asarray(x, dtype=np.float64)
  # Shifting by the max keeps exp() finite at high temperatures (T * W ~ 300).
  e = np.exp(x - np.max(x, axis=axis, keepdims=True))
  return e / np.sum(e, axis=axis, keepdims=True)


def kl_to_uniform(q: np.ndarray) -> float:
  """KL(q || uniform) = sum_m q_m log(q_m M), in nats, with 0 log 0 = 0.

  Args:
    q: A distribution over M models, shape [M].
  """
  q = np.asarray(q, dtype=np.float64)
  nonzero = q > 0
  return float(np.sum(q[nonzero] * np.log(q[nonzero] * q.shape[-1])))


def balance(p: np.ndarray,
            tol: float = 1e-4,
            max_iters: int = 10000) -> tuple[np.ndarray, np.ndarray]:
  """Balances p(m | c) so that every model gets an equal share of configs.

  Iterative proportional fitting: while the column mean q of `p` is further
  than `tol` (KL to uniform) from uniform, divide each column by q and
  renormalise the rows.

  Args:
    p: Row-stochastic matrix p(m | c), shape [C, M], entries > 0 in every
      column.
    tol: Stop once KL(q || uniform) <= tol. 1e-4 in the reference code.
    max_iters: Give up (with a RuntimeWarning) after this many divisions.

  Returns:
    (balanced, divisor): the balanced matrix, shape [C, M], float64; and the
    product of the column means it was divided by, shape [M], scaled so that
    its largest entry is 1 (ones if `p` was already balanced).
    `assignment_probs(scores, T, divisor)` re-applies them. Only the ratios
    between models matter (rows are renormalised); the scaling keeps them
    representable: each division multiplies the product by about 1/M, which
    would reach 0.0 in float64 after about 745 / ln M divisions (358 at M = 8,
    which T = 300 can need), and p(m | c) would then be NaN.

  Raises:
    ValueError: If `p` is not a 2-D row-stochastic matrix or a column is all
      zeros (no division can give that model a share).
  """
  p = np.array(p, dtype=np.float64)  # A copy: the caller's matrix is kept.
  if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
    raise ValueError(f"p must have shape [C, M]. Received: shape={p.shape}")
  if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-9):
    raise ValueError("p must be row-stochastic (non-negative, rows sum to 1). "
                     f"Received row sums in [{p.sum(axis=1).min()}, "
                     f"{p.sum(axis=1).max()}]")
  divisor = np.ones(p.shape[1], dtype=np.float64)
  q = p.mean(axis=0)
  if np.any(q <= 0):
    raise ValueError(f"every column of p needs a positive entry. Received "
                     f"column means {q.tolist()}")
  for _ in range(max_iters):
    if kl_to_uniform(q) <= tol:
      return p, divisor
    p /= q
    p /= p.sum(axis=1, keepdims=True)
    divisor *= q
    divisor /= divisor.max()
    q = p.mean(axis=0)
  if kl_to_uniform(q) > tol:
    # Not an error: an almost balanced matrix is still usable for training.
    warnings.warn(
        f"balance() stopped after max_iters={max_iters} with "
        f"KL(q || uniform)={kl_to_uniform(q):.3g} > tol={tol}", RuntimeWarning)
  return p, divisor


def assignment_probs(scores: np.ndarray, temperature: float,
                     divisor: np.ndarray) -> np.ndarray:
  """p(m | c) from the current scores, balanced with the epoch's divisions.

  softmax(temperature * scores) divided by `divisor`, rows renormalised. With
  the scores the divisor was computed from, this reproduces `balance`'s
  output; with divisor = ones it is a plain softmax.

  Args:
    scores: Scores of one configuration, shape [M], or of all, shape [C, M].
    temperature: Multiplies the scores before the softmax.
    divisor: Per-model divisor from `epoch_balance`, shape [M].

  Returns:
    float64 probabilities, the shape of `scores`; each row sums to 1.
  """
  scores = np.asarray(scores, dtype=np.float64)
  divisor = np.asarray(divisor, dtype=np.float64)
  if divisor.shape != scores.shape[-1:]:
    raise ValueError(f"divisor must have shape [M] = {scores.shape[-1:]}. "
                     f"Received: divisor.shape={divisor.shape}")
  p = softmax(temperature * scores) / divisor
  return p / p.sum(axis=-1, keepdims=True)


def epoch_balance(scores: np.ndarray,
                  temperature: float,
                  tol: float = 1e-4) -> np.ndarray:
  """The per-model divisor of this epoch: `balance(softmax(T * scores))[1]`.

  Args:
    scores: Score matrix W, shape [C, M].
    temperature: This epoch's temperature.
    tol: Balancing tolerance on KL(q || uniform).

  Returns:
    Divisor, shape [M], for `assignment_probs`.
  """
  return balance(softmax(temperature * np.asarray(scores, np.float64)),
                 tol=tol)[1]


def temperature(epoch: int, num_epochs: int, max_temperature: float) -> float:
  """Temperature of an epoch: linear from 1 at epoch 0 to `max_temperature`.

  Epochs are 0-based, so the last epoch, num_epochs - 1, gets
  `max_temperature`. With a single epoch the schedule has no end point to
  reach; it returns 1.0, the start of the schedule (no sharpening before any
  score has been learned).

  Raises:
    ValueError: If num_epochs < 1, epoch is outside 0..num_epochs-1 or
      max_temperature <= 0.
  """
  if num_epochs < 1:
    raise ValueError(
        f"num_epochs must be >= 1. Received: num_epochs={num_epochs}")
  if not 0 <= epoch < num_epochs:
    raise ValueError(f"epoch must be in 0..{num_epochs - 1}. Received: "
                     f"epoch={epoch}")
  if not max_temperature > 0:
    raise ValueError(f"max_temperature must be > 0. Received: "
                     f"max_temperature={max_temperature}")
  if num_epochs == 1:
    return 1.0
  return 1.0 + (max_temperature - 1.0) * epoch / (num_epochs - 1)


def ema_update(scores: np.ndarray,
               config_index: int,
               model_index: int,
               accuracy: float,
               decay: float = 0.9) -> np.ndarray:
  """Moves one score towards a new validation accuracy.

  W[c, m] <- decay * W[c, m] + (1 - decay) * accuracy.

  Args:
    scores: Score matrix W, shape [C, M]; not modified.
    config_index: 0-based row c (reference number - 1).
    model_index: 0-based column m.
    accuracy: Validation batch accuracy of (c, m), in [0, 1].
    decay: EMA decay, in [0, 1].

  Returns:
    A new float64 score matrix, shape [C, M].
  """
  if not 0.0 <= accuracy <= 1.0:
    raise ValueError(
        f"accuracy must be in [0, 1]. Received: accuracy={accuracy}")
  if not 0.0 <= decay <= 1.0:
    raise ValueError(f"decay must be in [0, 1]. Received: decay={decay}")
  new = np.array(scores, dtype=np.float64)
  new[config_index, model_index] = (decay * new[config_index, model_index] +
                                    (1.0 - decay) * accuracy)
  return new


def initial_scores(num_configs: int, num_models: int) -> np.ndarray:
  """Score matrix at the start of the search: ones, shape [C, M], float64."""
  if num_configs < 1 or num_models < 1:
    raise ValueError(f"num_configs and num_models must be >= 1. Received: "
                     f"num_configs={num_configs}, num_models={num_models}")
  return np.ones((num_configs, num_models), dtype=np.float64)


def assignment_entropy(probs: np.ndarray) -> float:
  """Mean over configurations of the entropy of p(m | c), in nats.

  log(M) when assignments are uniform, 0 when each configuration belongs to
  one model.

  Args:
    probs: p(m | c), shape [C, M].
  """
  probs = np.asarray(probs, dtype=np.float64)
  # 0 log 0 = 0: saturated rows at high temperature must not give NaN.
  logs = np.log(np.where(probs > 0, probs, 1.0))
  return float(np.mean(-np.sum(probs * logs, axis=-1)))


def model_shares(probs: np.ndarray) -> np.ndarray:
  """Expected share of configurations per model: column mean, shape [M]."""
  return np.asarray(probs, dtype=np.float64).mean(axis=0)


def assigned_models(probs: np.ndarray) -> np.ndarray:
  """Model each configuration is assigned to: argmax over models, shape [C].

  Ties go to the lowest model index.
  """
  return np.argmax(np.asarray(probs), axis=-1)


def specialisation(accuracy: np.ndarray, probs: np.ndarray) -> dict:
  """Whether the weight sets specialised: is a configuration better under its own set?

  The mixture's premise is that each set becomes better than the others on the
  configurations assigned to it. With every (configuration, set) pair evaluated, this
  measures it on the final evaluation:

  - `own_minus_others`: mean over configurations of accuracy[c, m_c] minus the mean of
    accuracy[c, m] over the other sets, m_c = argmax_m p(m | c); 0 when the sets did not
    specialise (the set a configuration is assigned to is no better for it than the
    others), positive when they did. `own_minus_others_se` is its standard error over the
    configurations.
  - `own_is_best`: the share of configurations whose own set is their best one (1/K by
    chance, 1 when fully specialised).
  - `set_advantage_removed`: `own_minus_others` after removing each set's mean advantage
    (the additive set effect: a set better on every configuration is not specialised).
  - `hardness`: mean over configurations of max_m p(m | c) (1/K uniform, 1 hard).
  - `configs_per_set`: how many configurations each set is assigned.

  Args:
    accuracy: [C, K] accuracy of every pair (no NaN), K >= 2.
    probs: [C, K] p(m | c).

  Returns:
    A JSON-able dict of floats (and a list of ints).
  """
  accuracy = np.asarray(accuracy, np.float64)
  probs = np.asarray(probs, np.float64)
  c, k = accuracy.shape
  if k < 2 or probs.shape != accuracy.shape or np.isnan(accuracy).any():
    raise ValueError(f"specialisation needs every pair of K >= 2 sets evaluated, and probs "
                     f"of the same shape. Received: accuracy {accuracy.shape} "
                     f"(NaN: {bool(np.isnan(accuracy).any())}), probs {probs.shape}")
  own_set = assigned_models(probs)
  rows = np.arange(c)

  def own_minus_others(a):
    own = a[rows, own_set]
    return own - (a.sum(axis=1) - own) / (k - 1)

  diff = own_minus_others(accuracy)
  centred = own_minus_others(accuracy - accuracy.mean(axis=0, keepdims=True))
  return {
      "own_minus_others": float(diff.mean()),
      "own_minus_others_se": float(diff.std(ddof=1) / np.sqrt(c)) if c > 1 else 0.0,
      "set_advantage_removed": float(centred.mean()),
      "own_is_best": float(np.mean(np.argmax(accuracy, axis=1) == own_set)),
      "hardness": float(probs.max(axis=1).mean()),
      "configs_per_set": np.bincount(own_set, minlength=k).astype(int).tolist(),
  }
