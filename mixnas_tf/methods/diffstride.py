"""DiffStride as a method: what a trained network's learned strides mean.

The layer itself is nn/diffstride.py; training is standalone.py with
`downsample="diffstride"`. Here: the downsampling profile of learned strides, the nearest
configuration of the space, and the summary `metrics.json` reports.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import math
from typing import Any

import numpy as np
import tensorflow as tf

from mixnas_tf import spaces
from mixnas_tf.nn import network


def downsampling_profile(space: spaces.SearchSpace,
                         strides: Mapping[int, Sequence[float]]) -> tuple[float, ...]:
  """log2 of the cumulative stride after each layer (stem first), per axis averaged.

  Layer i's entry is sum over DiffStride layers l <= i of log2(sqrt(S_h S_w)); a
  configuration's profile is its count of downsamplings so far, e.g. [4,3,3] ->
  (0,0,0,0,1,1,1,2,2,2).
  """
  profile, total = [0.0], 0.0
  for i in range(1, space.num_layers):
    if i in strides:
      s_h, s_w = strides[i]
      total += 0.5 * (math.log2(s_h) + math.log2(s_w))
    profile.append(total)
  return tuple(profile)


def nearest_config(space: spaces.SearchSpace,
                   strides: Mapping[int, Sequence[float]]) -> tuple[spaces.Config, float]:
  """The configuration whose downsampling profile is closest to the learned strides'.

  Distance: the sum over layers of squared differences of `downsampling_profile`s
  (log2 units), so a position is judged by how much the network has downsampled by then,
  not by its own stride alone: two strides of 1.4 in a row count like one of 2. Ties go
  to the lower reference number.

  Returns:
    (configuration, distance).
  """
  learned = np.array(downsampling_profile(space, strides))
  best, best_distance = None, math.inf
  for config in space.configs:
    distance = float(np.sum((learned - np.cumsum(config)) ** 2))
    if distance < best_distance - 1e-12:
      best, best_distance = config, distance
  return best, best_distance


def summarize(model, image_size: int, model_index: int = 0) -> dict[str, Any]:
  """What a trained DiffStride `SwitchableResNet` learned, as JSON-able values.

  Returns:
    learned_strides: {layer: [S_h, S_w]}; layer_sizes: per layer [h, w] as executed;
    downsampling_profile: see `downsampling_profile`; nearest_config: {index, stages,
    code, distance}; macs: multiply-accumulates per image at the executed sizes
    (`SwitchableResNet.costs`); relative_cost: the regulariser's relaxed cost
    (`SwitchableResNet.stride_cost`); nearest_config_macs_maxpool: the cost of the
    nearest configuration as a fixed max-pool network.
  """
  space = model.space
  strides = model.learned_strides(model_index)
  plan = model.size_plan(image_size, strides=strides)
  config, distance = nearest_config(space, strides)
  cost = model.stride_cost(tf.constant(model_index, tf.int32), (image_size, image_size))
  return {
      "learned_strides": {str(i): [round(v, 4) for v in s] for i, s in strides.items()},
      "layer_sizes": [list(size) for size in plan],
      "downsampling_profile": [round(v, 4) for v in downsampling_profile(space, strides)],
      "nearest_config": {**config.record(), "distance": round(distance, 4)},
      "macs": model.costs(image_size=image_size, plan=plan)["macs"],
      "relative_cost": float(cost),
      "nearest_config_macs_maxpool": network.costs(config, image_size, "maxpool",
                                                   model.num_classes)["macs"],
  }


def epoch_scalars(model, model_index: int = 0) -> dict[str, float]:
  """Per-layer strides as `diffstride/stride_<layer>_<h|w>` scalars, for epoch logs."""
  out = {}
  for i, (s_h, s_w) in model.learned_strides(model_index).items():
    out[f"diffstride/stride_{i}_h"] = s_h
    out[f"diffstride/stride_{i}_w"] = s_w
  return out
