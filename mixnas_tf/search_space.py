"""Search spaces of downsampling configurations, as plain immutable data.

A search space fixes a network's per-layer channel widths and asks only where
the network halves its spatial resolution. Layer 0 is the stem, layers
1..L-1 are residual blocks. A configuration (`Config`) is a tuple with one 0/1
digit per layer; a 1 means that layer halves the resolution of its input.

Three equivalent notations are used by people and by the reference results:

* stages `[a,b,c]`: how many layers (stem included) run at each resolution,
  e.g. `[4,3,3]` for the ResNet20 default; downsampling happens at layers
  `a` and `a+b`;
* the 1-based reference number, which orders configurations like
  `itertools.combinations(candidates, num_downsamples)` of their downsampling
  positions (equivalently, lexicographically by stages), e.g. 24 = `[4,3,3]`;
* the code string, e.g. `"0,0,0,0,1,0,0,1,0,0"`.

Everything here is a pure function of its arguments: no TensorFlow, so the
space can be enumerated, parsed and costed by tests and tools cheaply.
"""

import dataclasses
import functools
import itertools
import math
import numbers
import re
from typing import Any

from mixnas_tf import errors

# One 0/1 digit per layer (layer 0 = stem); 1 = the layer halves the resolution.
Config = tuple[int, ...]

_BLOCKS = ("basic",)
_DOWNSAMPLE_MODES = ("maxpool", "avgpool", "conv")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Where a network with fixed per-layer widths may downsample.

  Attributes:
    name: Registry name, e.g. "resnet20".
    widths: Output channels of each layer, shape [num_layers]; layer 0 is the
      stem. Widths are fixed by layer index whatever the downsampling.
    candidates: Layers that may downsample, increasing, each in
      1..num_layers-1 (the stem never downsamples).
    num_downsamples: How many candidates downsample (by 2) in every
      configuration.
    block: Residual block type: "basic" (two 3x3 convs). "bottleneck" is
      reserved for ResNet50-style spaces.
    default: The network's usual configuration in stage notation.
  """

  name: str
  widths: tuple[int, ...]
  candidates: tuple[int, ...]
  num_downsamples: int
  block: str
  default: tuple[int, ...]

  def __post_init__(self):
    # Validated once here so that every function below can trust the space.
    if not self.widths or any(w < 1 for w in self.widths):
      raise ValueError(
          f"widths must be a non-empty tuple of positive ints. Received: "
          f"widths={self.widths}")
    if (list(self.candidates) != sorted(set(self.candidates)) or
        any(not 1 <= c < len(self.widths) for c in self.candidates)):
      raise ValueError(
          f"candidates must be increasing layer indices in "
          f"1..{len(self.widths) - 1}. Received: candidates={self.candidates}")
    if not 1 <= self.num_downsamples <= len(self.candidates):
      raise ValueError(
          f"num_downsamples must be in 1..{len(self.candidates)}. Received: "
          f"num_downsamples={self.num_downsamples}")
    if self.block not in _BLOCKS:
      raise ValueError(
          f"block must be one of {_BLOCKS}. Received: block={self.block!r}")
    # Raises if the default is not a configuration of this space.
    from_stages(self, self.default)

  @property
  def num_layers(self) -> int:
    """Number of layers, stem included (10 for ResNet20)."""
    return len(self.widths)

  @functools.cached_property
  def configs(self) -> tuple[Config, ...]:
    """All configurations, in reference order (index 0 = reference number 1)."""
    return tuple(
        _code_from_positions(self.num_layers, positions)
        for positions in itertools.combinations(self.candidates,
                                                self.num_downsamples))

  @property
  def num_configs(self) -> int:
    """Number of configurations (36 for ResNet20)."""
    return len(self.configs)



def _code_from_positions(num_layers: int, positions) -> Config:
  return tuple(1 if i in positions else 0 for i in range(num_layers))


def _stages_rule(space: SearchSpace) -> str:
  letters = "abcdefghijklmnopqrstuvwxyz"[:space.num_downsamples + 1]
  return (f"stages [{','.join(letters)}] with {'+'.join(letters)}="
          f"{space.num_layers}, each >= 1")


def _accepted(space: SearchSpace) -> str:
  return (f"accepted: {_stages_rule(space)}; a reference number "
          f"1..{space.num_configs}; or a {space.num_layers}-digit 0/1 code "
          f"with {space.num_downsamples} ones at candidate layers "
          f"{format_stages(space.candidates)}")


def _check_config(space: SearchSpace, config) -> Config:
  """Returns `config` as a tuple of ints; raises ValueError saying why not."""
  config = tuple(int(d) for d in config)
  shown = to_code_string(config)
  if len(config) != space.num_layers:
    raise ValueError(
        f"code {shown} has {len(config)} digits, expected {space.num_layers} "
        f"(one 0/1 digit per layer, stem first)")
  if any(d not in (0, 1) for d in config):
    raise ValueError(f"code {shown} has digits other than 0 and 1")
  if config[0]:
    raise ValueError(f"code {shown} downsamples at the stem (layer 0), which "
                     f"never downsamples")
  ones = downsample_layers(config)
  if len(ones) != space.num_downsamples:
    raise ValueError(f"code {shown} has {len(ones)} ones, expected "
                     f"{space.num_downsamples}")
  if not set(ones) <= set(space.candidates):
    raise ValueError(
        f"code {shown} downsamples at layers {format_stages(ones)}, but only "
        f"layers {format_stages(space.candidates)} may downsample")
  return config


def to_stages(space: SearchSpace, config: Config) -> tuple[int, ...]:
  """Converts a configuration to stage notation.

  Args:
    space: The search space.
    config: A configuration, shape [num_layers].

  Returns:
    Layers per resolution, shape [num_downsamples + 1]; e.g. (4, 3, 3).

  Raises:
    ValueError: If `config` is not a configuration of `space`.
  """
  config = _check_config(space, config)
  bounds = (0,) + downsample_layers(config) + (space.num_layers,)
  return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))


def from_stages(space: SearchSpace, stages) -> Config:
  """Converts stage notation, e.g. (4, 3, 3), to a configuration.

  Raises:
    ValueError: If `stages` does not describe a configuration of `space`.
  """
  stages = tuple(int(s) for s in stages)
  shown = format_stages(stages)
  expected = space.num_downsamples + 1
  if len(stages) != expected:
    raise ValueError(f"stages {shown} have {len(stages)} entries, expected "
                     f"{expected} ({_stages_rule(space)})")
  if sum(stages) != space.num_layers:
    raise ValueError(f"stages {shown} sum to {sum(stages)}, expected "
                     f"{space.num_layers} ({_stages_rule(space)})")
  if min(stages) < 1:
    raise ValueError(f"stages {shown} have an entry below 1 "
                     f"({_stages_rule(space)})")
  positions = tuple(itertools.accumulate(stages[:-1]))
  if not set(positions) <= set(space.candidates):
    raise ValueError(
        f"stages {shown} downsample at layers {format_stages(positions)}, but "
        f"only layers {format_stages(space.candidates)} may downsample")
  return _code_from_positions(space.num_layers, positions)


@functools.cache
def _index_table(space: SearchSpace) -> dict[Config, int]:
  # Spaces are frozen (hashable) and few, so each table is built once.
  return {config: i + 1 for i, config in enumerate(space.configs)}


def to_index(space: SearchSpace, config: Config) -> int:
  """Returns the 1-based reference number of `config` (24 for [4,3,3]).

  Raises:
    ValueError: If `config` is not a configuration of `space`.
  """
  return _index_table(space)[_check_config(space, config)]


def from_index(space: SearchSpace, index: int) -> Config:
  """Returns the configuration with 1-based reference number `index`.

  Raises:
    ValueError: If `index` is not in 1..num_configs.
  """
  if (not isinstance(index, numbers.Integral) or isinstance(index, bool) or
      not 1 <= index <= space.num_configs):
    raise ValueError(f"reference number {index} is out of range "
                     f"1..{space.num_configs}")
  return space.configs[index - 1]


def to_code_string(config: Config) -> str:
  """Formats a configuration as digits: "0,0,0,0,1,0,0,1,0,0"."""
  return ",".join(str(d) for d in config)


def format_stages(stages) -> str:
  """Formats stages (or any int sequence) without spaces: "[4,3,3]"."""
  return "[" + ",".join(str(s) for s in stages) + "]"


def downsample_layers(config: Config) -> tuple[int, ...]:
  """Returns the indices of the layers that downsample, e.g. (4, 7)."""
  return tuple(i for i, d in enumerate(config) if d)


def resolution_divisors(space: SearchSpace, config: Config) -> tuple[int, ...]:
  """Returns by how much each layer's output resolution is divided.

  Args:
    space: The search space.
    config: A configuration, shape [num_layers].

  Returns:
    Shape [num_layers]; (1,1,1,1,2,2,2,4,4,4) for [4,3,3].
  """
  config = _check_config(space, config)
  return tuple(itertools.accumulate((2 if d else 1 for d in config),
                                    lambda a, b: a * b))


_INT_LIST = re.compile(r"^\s*-?\d+\s*(,\s*-?\d+\s*)*$")


def parse_config(space: SearchSpace, text: str) -> Config:
  """Parses one configuration from a user.

  The notation is told apart by how many comma-separated integers `text`
  holds: 1 is a reference number ("24"), num_downsamples+1 is stages
  ("[4,3,3]" or "4,3,3"), num_layers is a code ("0,0,0,0,1,0,0,1,0,0").
  Square brackets around any of them are optional.

  Raises:
    errors.UsageError: With a one-line message quoting `text`, if it is not a
      configuration of `space`.
  """
  body = text.strip()
  if body.startswith("[") and body.endswith("]"):
    body = body[1:-1]
  if not _INT_LIST.match(body):
    raise errors.UsageError(
        f"configuration {text!r} is not a comma-separated list of integers; "
        f"{_accepted(space)}")
  values = tuple(int(v) for v in body.split(","))
  try:
    if len(values) == 1:
      return from_index(space, values[0])
    if len(values) == space.num_downsamples + 1:
      return from_stages(space, values)
    if len(values) == space.num_layers:
      return _check_config(space, values)
  except ValueError as e:
    raise errors.UsageError(f"configuration {text!r}: {e}") from None
  raise errors.UsageError(
      f"configuration {text!r} has {len(values)} integers, expected 1, "
      f"{space.num_downsamples + 1} or {space.num_layers}; {_accepted(space)}")


def parse_configs(space: SearchSpace, text: str) -> tuple[Config, ...]:
  """Parses a `;`-separated list of configurations, e.g. "4,3,3;5,3,2;24".

  "all" (any case) or an empty string means every configuration, in
  reference order. Duplicates are dropped, keeping the first occurrence.

  Raises:
    errors.UsageError: If an element is invalid (the message names it) or
      the list holds no configuration (e.g. ";;").
  """
  if text.strip().lower() in ("", "all"):
    return space.configs
  configs = {}  # A dict keeps insertion order, so it dedupes stably.
  for element in text.split(";"):
    if element.strip():
      configs.setdefault(parse_config(space, element.strip()), None)
  if not configs:
    raise errors.UsageError(
        f"configuration list {text!r} holds no configuration; give "
        f"';'-separated configurations or 'all'")
  return tuple(configs)


def macs(space: SearchSpace,
         config: Config,
         image_size: int,
         downsample: str,
         num_classes: int = 10,
         in_channels: int = 3) -> int:
  """Counts the multiply-accumulates of one forward pass of one image.

  Only convolutions and the final dense layer are counted (not BN, ReLU,
  pooling or additions). Spatial sizes follow 'same' padding: halving a side
  of n gives ceil(n / 2).

  Args:
    space: The search space (block "basic").
    config: A configuration, shape [num_layers].
    image_size: Side of the square input image, e.g. 32.
    downsample: How a block downsamples. "maxpool"/"avgpool": its input is
      pooled 2x2 first, so both convs and the shortcut run at the halved
      resolution. "conv": its first 3x3 conv has stride 2 and its shortcut is
      a stride-2 1x1 conv (even when the widths match). (A DiffStride
      network's cost depends on its learned sizes: see `diffstride_macs`.)
    num_classes: Outputs of the dense classifier.
    in_channels: Channels of the input image.

  Returns:
    The exact MAC count.

  Raises:
    ValueError: If `downsample` is unknown or `config` is invalid.
  """
  if downsample not in _DOWNSAMPLE_MODES:
    hint = ("; a DiffStride network's cost depends on its learned layer "
            "sizes: use diffstride_macs" if downsample == "diffstride" else "")
    raise ValueError(f"downsample must be one of {_DOWNSAMPLE_MODES}{hint}. "
                     f"Received: downsample={downsample!r}")
  if image_size < 1:
    raise ValueError(
        f"image_size must be >= 1. Received: image_size={image_size}")
  config = _check_config(space, config)
  widths = space.widths
  side = image_size
  total = side * side * 9 * in_channels * widths[0]  # Stem, stride 1.
  for i in range(1, space.num_layers):
    cin, cout = widths[i - 1], widths[i]
    if config[i]:
      side = math.ceil(side / 2)
    # In every mode both 3x3 convs produce outputs at the block's output
    # resolution (a stride-2 conv costs the same as a conv on pooled input).
    total += side * side * 9 * (cin * cout + cout * cout)
    if cin != cout or (config[i] and downsample == "conv"):
      total += side * side * cin * cout  # 1x1 shortcut at output resolution.
  return total + widths[-1] * num_classes


def diffstride_macs(space: SearchSpace,
                    sizes,
                    num_classes: int = 10,
                    in_channels: int = 3):
  """Multiply-accumulates of a DiffStride network with given layer sizes.

  In a DiffStride block (layers.SwitchableBlock, downsample "diffstride")
  the first 3x3 conv runs at the block's *input* resolution and the
  DiffStride op then resizes; the second conv and the 1x1 shortcut (present
  when the widths differ; it runs after the op, which commutes with it) run
  at the output resolution. Counted like `macs`: convolutions and the dense
  layer only (not the spectral op, BN, ReLU or additions).

  The arithmetic is plain `+` and `*`, so the sizes may be ints (the exact
  count) or differentiable tensors (a relaxed cost, e.g. sizes H / prod(S)
  for the stride regulariser).

  Args:
    space: The search space (block "basic").
    sizes: Per layer (stem first), the (height, width) of its output, shape
      [num_layers, 2]; sizes[0] is the input image's size.
    num_classes: Outputs of the dense classifier.
    in_channels: Channels of the input image.

  Returns:
    The MAC count (an int for int sizes).
  """
  if len(sizes) != space.num_layers:
    raise ValueError(f"sizes must give (height, width) for each of the "
                     f"{space.num_layers} layers. Received: {len(sizes)} sizes")
  widths = space.widths
  h, w = sizes[0]
  total = h * w * 9 * in_channels * widths[0]  # Stem, stride 1.
  for i in range(1, space.num_layers):
    cin, cout = widths[i - 1], widths[i]
    (h_in, w_in), (h, w) = sizes[i - 1], sizes[i]
    total += h_in * w_in * 9 * cin * cout + h * w * 9 * cout * cout
    if cin != cout:
      total += h * w * cin * cout
  return total + widths[-1] * num_classes


def describe(space: SearchSpace) -> dict[str, Any]:
  """Returns a JSON-able description of `space`, for run directories."""
  return {
      "name": space.name,
      "widths": list(space.widths),
      "candidates": list(space.candidates),
      "num_downsamples": space.num_downsamples,
      "block": space.block,
      "default": list(space.default),
      "num_layers": space.num_layers,
      "num_configs": space.num_configs,
      "configs": [{
          "index": i + 1,
          "stages": list(to_stages(space, config)),
          "code": to_code_string(config),
      } for i, config in enumerate(space.configs)],
  }


# Keyed by name so that ResNet18/ResNet50 spaces can be added beside it.
_SPACES: dict[str, SearchSpace] = {
    "resnet20":
        SearchSpace(
            name="resnet20",
            widths=(16, 16, 16, 16, 32, 32, 32, 64, 64, 64),
            candidates=(1, 2, 3, 4, 5, 6, 7, 8, 9),
            num_downsamples=2,
            block="basic",
            default=(4, 3, 3),
        ),
}


def get_space(name: str) -> SearchSpace:
  """Returns the registered search space called `name`.

  Raises:
    errors.UsageError: If no space has that name.
  """
  try:
    return _SPACES[name]
  except KeyError:
    raise errors.UsageError(
        f"unknown search space {name!r}; known: {', '.join(sorted(_SPACES))}"
    ) from None
