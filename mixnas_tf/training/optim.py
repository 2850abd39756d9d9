"""SGD with momentum on one weight set of stacked variables, loss scaling, LR schedules.

Keras' SGD cannot serve a mixture: with stacked `[K, ...]` variables it would decay every
slice's momentum and move every slice's weights on each step, while only the sampled
SuperNet may step. `SlicedSGD` keeps a momentum buffer per weight set (the slot is stacked
like its variable) and updates slice k only, with PyTorch's SGD semantics as in the
reference code: `buf = mu * buf + (g + wd * w)`, `w -= lr * buf` (or Nesterov).
As Keras optimizers do, a variable's `constraint` (if any) is applied after its update;
a variable whose layer set `variable.no_weight_decay = True` (DiffStride's strides, which
decay would pull towards 0) is not decayed.
"""

from collections.abc import Callable
import math
from typing import Any

import keras
import tensorflow as tf

from mixnas_tf.training import distribute


def slice_gradient(grad, model_index):
  """The gradient of slice `model_index` from a gradient of a stacked variable `[K, ...]`.

  Gathers with a tensor index produce IndexedSlices whose indices all equal the model
  index (one row per gather of the variable in the step); they are summed. A dense
  gradient (another op on the whole variable) is sliced.
  """
  if isinstance(grad, tf.IndexedSlices):
    return tf.reduce_sum(grad.values, axis=0)
  return tf.gather(grad, model_index)


class SlicedSGD(tf.Module):
  """SGD with momentum and weight decay that updates only slice k of each variable.

  Args:
    variables: the trainable (Keras) variables, each of shape [K, ...].
    momentum: momentum coefficient.
    weight_decay: L2 coefficient added to the gradient (PyTorch-style, all parameters).
    nesterov: Nesterov momentum.
  """

  def __init__(self, variables, momentum: float = 0.9, weight_decay: float = 0.0,
               nesterov: bool = False, name="sliced_sgd"):
    super().__init__(name=name)
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum}")
    if weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0. Received: weight_decay={weight_decay}")
    self.momentum = float(momentum)
    self.weight_decay = float(weight_decay)
    self.nesterov = bool(nesterov)
    self._variables = list(variables)
    self._decays = [not getattr(v, "no_weight_decay", False) for v in self._variables]
    self.slots = [
        tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False,
                    name=v.path.replace("/", "_") + "_momentum")
        for v in self._variables
    ]

  def apply(self, grads, model_index, learning_rate, apply_mask=None):
    """Applies one step to slice `model_index` of every variable.

    Args:
      grads: gradients aligned with the variables (IndexedSlices or dense [K, ...]).
      model_index: int32 scalar tensor.
      learning_rate: float32 scalar tensor.
      apply_mask: optional bool scalar tensor; when False the step leaves everything
        unchanged (a float16 step whose gradients overflowed).
    """
    self.apply_sliced(self.slice(grads, model_index), model_index, learning_rate, apply_mask)

  @staticmethod
  def slice(grads, model_index):
    """The gradients of slice `model_index` (float32; None stays None)."""
    return [None if g is None else tf.cast(slice_gradient(g, model_index), tf.float32)
            for g in grads]

  def apply_sliced(self, grads, model_index, learning_rate, apply_mask=None):
    """`apply` with gradients already sliced (`slice`)."""
    for var, slot, g, decays in zip(self._variables, self.slots, grads, self._decays):
      if g is None:
        continue
      w = tf.gather(var.value, model_index)
      buf = tf.gather(slot, model_index)
      if self.weight_decay and decays:
        g += self.weight_decay * w
      new_buf = self.momentum * buf + g
      step = g + self.momentum * new_buf if self.nesterov else new_buf
      new_w = w - learning_rate * step
      if getattr(var, "constraint", None) is not None:
        new_w = var.constraint(new_w)
      if apply_mask is not None:
        new_buf = tf.where(apply_mask, new_buf, buf)
        new_w = tf.where(apply_mask, new_w, w)
      distribute.write_slice(slot, model_index, new_buf)
      distribute.write_slice(var.value, model_index, new_w)


class DynamicLossScale(tf.Module):
  """Dynamic loss scaling for float16: halve on overflow, double after `period` good steps."""

  def __init__(self, initial_scale: float = 2.0**15, period: int = 2000, name="loss_scale"):
    super().__init__(name=name)
    self.scale = tf.Variable(initial_scale, dtype=tf.float32, trainable=False, name="scale")
    self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
    self.period = int(period)

  def update(self, grads_finite):
    """Adjusts the scale after a step; `grads_finite` is a bool scalar tensor."""
    grow = tf.logical_and(grads_finite, self.good_steps + 1 >= self.period)
    self.scale.assign(tf.where(grow, self.scale * 2.0,
                               tf.where(grads_finite, self.scale,
                                        tf.maximum(self.scale * 0.5, 1.0))))
    self.good_steps.assign(tf.where(tf.logical_and(grads_finite, tf.logical_not(grow)),
                                    self.good_steps + 1, tf.zeros_like(self.good_steps)))


def all_finite(grads) -> tf.Tensor:
  values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])


SCHEDULES = ("cosine", "step", "constant")


def schedule(*, schedule: str, base: float, total_steps: int, minimum: float = 0.0,
             warmup_steps: int = 0, boundaries: tuple[float, ...] = (0.5, 0.75),
             decay: float = 0.1) -> Callable[[Any], tf.Tensor]:
  """The learning-rate schedule: step (a scalar tensor or number) -> rate, traced into the
  step. Keras' own schedules where one exists:

  - "cosine": `keras.optimizers.schedules.CosineDecay` from `base` to `minimum` over
    `total_steps` (PyTorch's CosineAnnealingLR); with `warmup_steps`, its linear warm-up
    from 0 to `base`, then the cosine over the remaining steps.
  - "step": `PiecewiseConstantDecay`, `base * decay**n` from the step at which the n-th of
    `boundaries` (fractions of training) is reached.
  - "constant": `base`.
  For "step" and "constant" (Keras has no warm-up for them) a warm-up is the same linear
  ramp from 0 as CosineDecay's: the rate times min(1, step / warmup_steps).
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}. "
                     f"Received: schedule={schedule!r}")
  total = max(int(total_steps), 1)
  warmup = max(int(warmup_steps), 0)
  if schedule == "cosine":
    alpha = minimum / base if base else 0.0
    if warmup:
      cosine = keras.optimizers.schedules.CosineDecay(
          0.0, decay_steps=max(total - warmup, 1), alpha=alpha, warmup_target=base,
          warmup_steps=warmup)
    else:
      cosine = keras.optimizers.schedules.CosineDecay(base, decay_steps=total, alpha=alpha)
    return lambda step: tf.cast(cosine(tf.cast(step, tf.float32)), tf.float32)
  if schedule == "step" and boundaries:
    # PiecewiseConstantDecay changes value *after* a boundary: boundary - 1 starts it at it.
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay(
        [float(math.ceil(b * total) - 1) for b in boundaries],
        [base * decay**n for n in range(len(boundaries) + 1)])
    rate = lambda step: tf.cast(piecewise(tf.cast(step, tf.float32)), tf.float32)
  else:
    rate = lambda step: tf.constant(base, tf.float32)
  if not warmup:
    return rate
  return lambda step: rate(step) * tf.minimum(1.0, tf.cast(step, tf.float32) / warmup)
