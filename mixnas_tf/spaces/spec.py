"""Search spaces and configurations as plain, immutable data (no TensorFlow).

A network is a stem (layer 0) followed by residual blocks (layers 1..L-1). A search space
fixes every layer's block type and widths and asks only where the network halves its
resolution: `num_downsamples` of the `candidates` layers do. A configuration (`Config`) is
that choice: a tuple with one 0/1 digit per layer (1 = the layer halves its input),
carrying its space, so it reads as a stable id (`config.id`, the stage notation
"4,3,3"), a label "[4,3,3]", the reference number `config.index`, and the digits.

Notations people and the reference results use, all accepted by `parse_config`:
* stages `[a,b,c,...]`: how many layers run at each resolution. In ResNet20 and ResNet18
  the stem counts in the first stage (ResNet20 default [4,3,3], sum 10); in ResNet50 only
  blocks count (default [3,4,6,3], sum 16), as in the paper;
* the reference number: the configuration's position in the reference code's enumeration,
  `itertools.combinations(candidates, num_downsamples)` (lexicographic by stages),
  numbered from the space's `reference_base` (ResNet20: 1..36; ResNet18: 0..55 and
  ResNet50: 0..454, the reference's 0-based indices);
* the code, one 0/1 digit per layer, e.g. "0,0,0,0,1,0,0,1,0,0".
The three notations have different numbers of integers in every space (checked when a
space is made), which is how a bare "4,3,3" is told apart from "24".
"""

import dataclasses
import functools
import itertools
import numbers
import re
from typing import Any

from mixnas_tf import errors

BLOCKS = ("basic", "bottleneck")
STEMS = ("cifar", "imagenet", "auto")
# With stem="auto", inputs of at least this side get the ImageNet stem (7x7/2 + max-pool).
IMAGENET_STEM_MIN_SIZE = 128


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Where a network with fixed per-layer widths may downsample.

  Attributes:
    name: registry name, e.g. "resnet20".
    block: residual block type of layers 1..L-1, one of BLOCKS.
    widths: output channels of each layer, [num_layers]; layer 0 is the stem. Widths are
      fixed by layer index whatever the downsampling (ALGORITHM.md).
    inner_widths: "bottleneck" only: each block's inner width (its 1x1 / 3x3 convs),
      [num_layers] with 0 for the stem; empty for "basic".
    candidates: layers that may downsample, increasing, each in 1..num_layers-1.
    num_downsamples: how many candidates halve the resolution in every configuration.
    default: the network's usual configuration, in stage notation.
    stem_in_stages: whether the stage notation counts the stem in the first stage.
    reference_base: the number of the first configuration in the reference's numbering.
    stem: "cifar" (3x3 stride 1), "imagenet" (7x7 stride 2 + 3x3 stride-2 max-pool), or
      "auto": "imagenet" for inputs of at least IMAGENET_STEM_MIN_SIZE pixels.
    zero_init_residual: stand-alone networks (standard BatchNorm) start each block's
      last BatchNorm at gamma = 0, as the reference's ResNet18/50 retraining does.
    projection_layers: layers whose shortcut is a 1x1 conv + BN; empty: where the width
      changes (`projections`). Set explicitly by width search (widths.py), whose pruned
      widths may happen to match where the original network had a projection.
    inner_widths: also for "basic" blocks: the width of the first conv's output (default,
      empty or 0: the block's output width).
  """

  name: str
  block: str
  widths: tuple[int, ...]
  candidates: tuple[int, ...]
  num_downsamples: int
  default: tuple[int, ...]
  stem_in_stages: bool = True
  reference_base: int = 1
  stem: str = "cifar"
  inner_widths: tuple[int, ...] = ()
  zero_init_residual: bool = False
  projection_layers: tuple[int, ...] = ()

  def __post_init__(self):
    # Validated once here so that every function below can trust the space.
    if len(self.widths) < 2 or any(w < 1 for w in self.widths):
      raise ValueError(f"widths must hold a stem and at least one block, all positive. "
                       f"Received: widths={self.widths}")
    if self.block not in BLOCKS:
      raise ValueError(f"block must be one of {BLOCKS}. Received: block={self.block!r}")
    if self.stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}. Received: stem={self.stem!r}")
    if self.block == "bottleneck" and len(self.inner_widths) != len(self.widths):
      raise ValueError("a bottleneck space gives inner_widths for every layer. "
                       f"Received: inner_widths={self.inner_widths}")
    if self.inner_widths and (len(self.inner_widths) != len(self.widths)
                              or any(w < 0 for w in self.inner_widths)):
      raise ValueError("inner_widths gives one width >= 0 per layer (0: the output width). "
                       f"Received: inner_widths={self.inner_widths}")
    if any(not 1 <= p < len(self.widths) for p in self.projection_layers):
      raise ValueError("projection_layers are block layers in 1.."
                       f"{len(self.widths) - 1}. Received: {self.projection_layers}")
    for i in range(1, len(self.widths)):
      if self.widths[i - 1] != self.widths[i] and i not in self.projections:
        raise ValueError(f"layer {i} changes the width ({self.widths[i - 1]} -> "
                         f"{self.widths[i]}) without a projection shortcut")
    if (list(self.candidates) != sorted(set(self.candidates)) or
        any(not 1 <= c < len(self.widths) for c in self.candidates)):
      raise ValueError(
          f"candidates must be increasing layer indices in "
          f"1..{len(self.widths) - 1}. Received: candidates={self.candidates}")
    if not 1 <= self.num_downsamples <= len(self.candidates):
      raise ValueError(
          f"num_downsamples must be in 1..{len(self.candidates)}. Received: "
          f"num_downsamples={self.num_downsamples}")
    if len({1, self.num_downsamples + 1, self.num_layers}) != 3:
      raise ValueError("a reference number, stages and a code must have different numbers "
                       f"of integers. Received: {self.num_downsamples + 1} stages, "
                       f"{self.num_layers} layers")
    # Raises if the default is not a configuration of this space.
    from_stages(self, self.default)

  @property
  def num_layers(self) -> int:
    """Number of layers, stem included (10 for ResNet20)."""
    return len(self.widths)

  @property
  def projections(self) -> tuple[int, ...]:
    """Layers whose shortcut is a 1x1 conv + BN projection."""
    if self.projection_layers:
      return self.projection_layers
    return tuple(i for i in range(1, self.num_layers) if self.widths[i - 1] != self.widths[i])

  def inner_width(self, layer: int) -> int:
    """The inner width of block `layer` (a basic block's first conv output, a
    bottleneck's 1x1 and 3x3 convs)."""
    inner = self.inner_widths[layer] if self.inner_widths else 0
    return inner or self.widths[layer]

  def to_dict(self) -> dict[str, Any]:
    """JSON-able fields; `SearchSpace.from_dict` inverts it."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

  @classmethod
  def from_dict(cls, fields: dict[str, Any]) -> "SearchSpace":
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

  @functools.cached_property
  def configs(self) -> tuple["Config", ...]:
    """All configurations, in reference order."""
    return tuple(Config(_code_from_positions(self.num_layers, positions), self)
                 for positions in itertools.combinations(self.candidates,
                                                         self.num_downsamples))

  @property
  def num_configs(self) -> int:
    return len(self.configs)

  def stem_for(self, image_size: int) -> str:
    """The stem kind ("cifar" or "imagenet") for inputs of side `image_size`."""
    if self.stem != "auto":
      return self.stem
    return "imagenet" if image_size >= IMAGENET_STEM_MIN_SIZE else "cifar"


class Config(tuple):
  """A configuration: the 0/1 digit of every layer, and the space it belongs to.

  A tuple, so it hashes and compares like its digits (a plain code tuple finds it in a
  dict) and compiled TensorFlow functions trace it like one; build it with
  `space.configs`, `parse_config`, `from_stages` or `from_index`, which check it.
  """

  space: SearchSpace

  def __new__(cls, code, space: SearchSpace):
    self = super().__new__(cls, (int(d) for d in code))
    self.space = space
    return self

  def __reduce__(self):
    return (Config, (tuple(self), self.space))

  @property
  def code(self) -> tuple[int, ...]:
    return tuple(self)

  @property
  def stages(self) -> tuple[int, ...]:
    return to_stages(self.space, self)

  @property
  def id(self) -> str:
    """The stable string id: the stage notation without brackets, e.g. "4,3,3"."""
    return ",".join(str(s) for s in self.stages)

  @property
  def label(self) -> str:
    return format_stages(self.stages)

  @property
  def index(self) -> int:
    """The reference number (ResNet20 24 = [4,3,3]; ResNet50 204 = [3,4,6,3])."""
    return to_index(self.space, self)

  def record(self) -> dict[str, Any]:
    """{index, stages, code}: how results files name a configuration."""
    return {"index": self.index, "stages": list(self.stages), "code": to_code_string(self)}

  def __repr__(self):
    return f"Config({self.space.name} {self.label})"


def _code_from_positions(num_layers: int, positions) -> tuple[int, ...]:
  return tuple(1 if i in positions else 0 for i in range(num_layers))


def _stages_rule(space: SearchSpace) -> str:
  letters = "abcdefghijklmnopqrstuvwxyz"[:space.num_downsamples + 1]
  total = space.num_layers - (0 if space.stem_in_stages else 1)
  what = "layers, stem included" if space.stem_in_stages else "blocks"
  return f"stages [{','.join(letters)}] ({what}) with {'+'.join(letters)}={total}, each >= 1"


def _accepted(space: SearchSpace) -> str:
  first = space.reference_base
  return (f"accepted: {_stages_rule(space)}; a reference number "
          f"{first}..{first + space.num_configs - 1}; or a {space.num_layers}-digit 0/1 "
          f"code with {space.num_downsamples} ones at candidate layers "
          f"{format_stages(space.candidates)}")


def check_code(space: SearchSpace, config) -> Config:
  """Returns `config` as a Config of `space`; raises ValueError saying why not."""
  code = tuple(int(d) for d in config)
  shown = to_code_string(code)
  if len(code) != space.num_layers:
    raise ValueError(f"code {shown} has {len(code)} digits, expected {space.num_layers} "
                     f"(one 0/1 digit per layer, stem first)")
  if any(d not in (0, 1) for d in code):
    raise ValueError(f"code {shown} has digits other than 0 and 1")
  if code[0]:
    raise ValueError(f"code {shown} downsamples at the stem (layer 0), which never "
                     "downsamples")
  ones = downsample_layers(code)
  if len(ones) != space.num_downsamples:
    raise ValueError(f"code {shown} has {len(ones)} ones, expected {space.num_downsamples}")
  if not set(ones) <= set(space.candidates):
    raise ValueError(f"code {shown} downsamples at layers {format_stages(ones)}, but only "
                     f"layers {format_stages(space.candidates)} may downsample")
  if isinstance(config, Config) and config.space == space:
    return config
  return Config(code, space)


def to_stages(space: SearchSpace, config) -> tuple[int, ...]:
  """Stage notation of a configuration, e.g. (4, 3, 3); raises ValueError if invalid."""
  code = check_code(space, config)
  bounds = (0,) + downsample_layers(code) + (space.num_layers,)
  stages = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
  if not space.stem_in_stages:
    stages[0] -= 1
  return tuple(stages)


def from_stages(space: SearchSpace, stages) -> Config:
  """The configuration of stage notation `stages`; raises ValueError if invalid."""
  stages = tuple(int(s) for s in stages)
  shown = format_stages(stages)
  if len(stages) != space.num_downsamples + 1:
    raise ValueError(f"stages {shown} have {len(stages)} entries, expected "
                     f"{space.num_downsamples + 1} ({_stages_rule(space)})")
  total = space.num_layers - (0 if space.stem_in_stages else 1)
  if sum(stages) != total:
    raise ValueError(f"stages {shown} sum to {sum(stages)}, expected {total} "
                     f"({_stages_rule(space)})")
  if min(stages) < 1:
    raise ValueError(f"stages {shown} have an entry below 1 ({_stages_rule(space)})")
  offset = 0 if space.stem_in_stages else 1
  positions = tuple(p + offset for p in itertools.accumulate(stages[:-1]))
  if not set(positions) <= set(space.candidates):
    raise ValueError(f"stages {shown} downsample at layers {format_stages(positions)}, but "
                     f"only layers {format_stages(space.candidates)} may downsample")
  return Config(_code_from_positions(space.num_layers, positions), space)


@functools.cache
def _index_table(space: SearchSpace) -> dict[tuple[int, ...], int]:
  return {tuple(config): i + space.reference_base for i, config in enumerate(space.configs)}


def to_index(space: SearchSpace, config) -> int:
  """The reference number of `config`; raises ValueError if invalid."""
  return _index_table(space)[tuple(check_code(space, config))]


def from_index(space: SearchSpace, index: int) -> Config:
  """The configuration with reference number `index`; raises ValueError if out of range."""
  first, last = space.reference_base, space.reference_base + space.num_configs - 1
  if (not isinstance(index, numbers.Integral) or isinstance(index, bool) or
      not first <= index <= last):
    raise ValueError(f"reference number {index} is out of range {first}..{last}")
  return space.configs[index - first]


def to_code_string(config) -> str:
  """Formats a configuration as digits: "0,0,0,0,1,0,0,1,0,0"."""
  return ",".join(str(d) for d in config)


def format_stages(stages) -> str:
  """Formats stages (or any int sequence) without spaces: "[4,3,3]"."""
  return "[" + ",".join(str(s) for s in stages) + "]"


def downsample_layers(config) -> tuple[int, ...]:
  """The indices of the layers that downsample, e.g. (4, 7)."""
  return tuple(i for i, d in enumerate(config) if d)


_INT_LIST = re.compile(r"^\s*-?\d+\s*(,\s*-?\d+\s*)*$")


def parse_config(space: SearchSpace, text: str) -> Config:
  """Parses one configuration from a user: stages, a reference number or a code.

  Raises:
    errors.UsageError: with a one-line message quoting `text`, if it is not a
      configuration of `space`.
  """
  body = text.strip()
  if body.startswith("[") and body.endswith("]"):
    body = body[1:-1]
  if not _INT_LIST.match(body):
    raise errors.UsageError(f"configuration {text!r} is not a comma-separated list of "
                            f"integers; {_accepted(space)}")
  values = tuple(int(v) for v in body.split(","))
  try:
    if len(values) == 1:
      return from_index(space, values[0])
    if len(values) == space.num_downsamples + 1:
      return from_stages(space, values)
    if len(values) == space.num_layers:
      return check_code(space, values)
  except ValueError as e:
    raise errors.UsageError(f"configuration {text!r} of {space.name}: {e}") from None
  raise errors.UsageError(
      f"configuration {text!r} has {len(values)} integers, expected 1, "
      f"{space.num_downsamples + 1} or {space.num_layers}; {_accepted(space)}")


def parse_configs(space: SearchSpace, text: str) -> tuple[Config, ...]:
  """Parses a `;`-separated list, e.g. "4,3,3;5,3,2;24", or "all" (any case).

  Duplicates are dropped, keeping the first occurrence.

  Raises:
    errors.UsageError: an invalid element (named), or no configuration at all (an empty
      or blank list is refused: an empty --configs is a mistake, not "all").
  """
  if text.strip().lower() == "all":
    return space.configs
  configs = {}  # A dict keeps insertion order, so it dedupes stably.
  for element in text.split(";"):
    if element.strip():
      configs.setdefault(parse_config(space, element.strip()), None)
  if not configs:
    raise errors.UsageError(f"configuration list {text!r} holds no configuration; give "
                            "';'-separated configurations or 'all'")
  return tuple(configs)


def with_widths(space: SearchSpace, widths, inner_widths=(), name: str | None = None
                ) -> SearchSpace:
  """The same space with other per-layer widths (a widened or a pruned network).

  Projection shortcuts stay where `space` has them, whatever the new widths.
  """
  widths = tuple(int(w) for w in widths)
  inner = tuple(int(w) for w in inner_widths) if inner_widths else ()
  if space.block == "bottleneck" and not inner:
    raise ValueError("a bottleneck space needs its inner widths")
  return dataclasses.replace(
      space, name=name or f"{space.name}-w", widths=widths, inner_widths=inner,
      projection_layers=space.projections)


def describe(space: SearchSpace) -> dict[str, Any]:
  """A JSON-able description of `space`, for work directories."""
  return {
      "name": space.name, "block": space.block, "stem": space.stem,
      "widths": list(space.widths), "inner_widths": list(space.inner_widths),
      "candidates": list(space.candidates), "num_downsamples": space.num_downsamples,
      "default": list(space.default), "stem_in_stages": space.stem_in_stages,
      "reference_base": space.reference_base, "num_layers": space.num_layers,
      "zero_init_residual": space.zero_init_residual,
      "projections": list(space.projections),
      "num_configs": space.num_configs,
      "configs": [c.record() for c in space.configs],
  }
