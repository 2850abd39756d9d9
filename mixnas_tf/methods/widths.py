"""Layer-wise channel widths: widen, learn channel importance, shrink to a MAC budget.

The heterogeneity hypothesis (Li et al., CVPR 2021; ALGORITHM.md section 3): a network's
per-layer widths found by shrinking a widened network beat the hand-set ones at lower cost.
This is the method on any space and configuration, with network slimming's importance
signal (Liu et al., ICCV 2017): an l1 penalty on the BatchNorm scales during a short search
phase, |gamma| per channel as its importance. ALGORITHM.md allows it in place of the
reference's latent-vector hypernetwork, which would need a second way to generate every
conv's weights; the importance is an input of `shrink`, so another signal plugs in there.

Which channels are pruned together is not written down here: it is read off the network's
own forward pass (`Coupling`, an interpreter of nn/interpret.py's operations). Every conv
output is a set of channels; a residual addition joins its two operands' sets, so all the
convs that feed one residual stream (a stage's block outputs and its projection) share one
keep mask, and additions always match after pruning; each other conv output of a block
(a basic block's first conv; a bottleneck's 1x1 and its 3x3) is a unit of its own, pruned
by its own BatchNorm's scales. A space has one inner width per block, so a bottleneck's two
inner units are tied: they keep the same number of channels, each its own most important
ones (the count from the two units' importances sorted and averaged rank by rank). The
set that feeds the classifier (the last stage's output, never pruned on CIFAR in the
reference) and the input image are kept whole.

`shrink` keeps, in every unit, the channels whose importance reaches one global threshold
(and at least `min_keep` of each unit), binary-searching the threshold until the pruned
network's MACs are within `tolerance` (0.1 %) of the target.
"""

import dataclasses
import math

import numpy as np

from mixnas_tf import spaces
from mixnas_tf.nn import network as network_lib


class Coupling:
  """An interpreter that finds which channels must be pruned together.

  Tensors are ids of channel sets; `add` joins its operands' sets (union-find). After a
  forward pass: `convs` (scope, layer, in id, out id), `bns` (scope, layer, id),
  `outputs` {scope: id of its output}, `classifier` (the id the dense layer reads).
  """

  def __init__(self):
    self.scope = ""
    self._parent: dict[int, int] = {}
    self.convs: list = []
    self.bns: list = []
    self.outputs: dict[str, int] = {}
    self.classifier = None
    self.input = self._new()

  def _new(self) -> int:
    node = len(self._parent)
    self._parent[node] = node
    return node

  def find(self, node: int) -> int:
    while self._parent[node] != node:
      self._parent[node] = self._parent[self._parent[node]]
      node = self._parent[node]
    return node

  def union(self, a: int, b: int) -> int:
    a, b = self.find(a), self.find(b)
    self._parent[max(a, b)] = min(a, b)
    return min(a, b)

  def _out(self, node):
    self.outputs[self.scope] = node
    return node

  def conv(self, x, layer, strides: int = 1):
    y = self._new()
    self.convs.append((self.scope, layer, x, y))
    return self._out(y)

  def bn(self, x, layer):
    self.bns.append((self.scope, layer, x))
    return self._out(x)

  def add(self, a, b):
    return self._out(self.union(a, b))

  def relu(self, x):
    return self._out(x)

  def pool(self, x, kind, size=2, stride=2):
    return self._out(x)

  def subsample(self, x):
    return self._out(x)

  def resize(self, x, layer, output_size):
    return self._out(x)

  def global_pool(self, x):
    return x

  def dense(self, x, layer):
    self.classifier = x
    return x


@dataclasses.dataclass(frozen=True)
class Unit:
  """Channels pruned together.

  Attributes:
    name: "stream<L>" (the residual stream that layer L's output belongs to, named by its
      first layer), "inner<L>" (block L's first inner conv) or "inner<L>b" (a
      bottleneck's 3x3, tied to "inner<L>").
    channels: its width in the network it was read from.
    prunable: False for the stream the classifier reads.
    bns: paths of the BatchNorm layers that normalise it (their |gamma| is its importance).
    layers: for a stream, the layers whose output it is.
  """
  name: str
  channels: int
  prunable: bool
  bns: tuple[str, ...]
  layers: tuple[int, ...] = ()


@dataclasses.dataclass
class Structure:
  """A network's units, and which unit every conv reads and writes (for inheritance)."""
  units: dict[str, Unit]
  conv_units: dict[str, tuple[str | None, str]]  # conv path -> (input unit, output unit)
  bn_units: dict[str, str]  # BN path -> unit
  classifier_unit: str
  layer_stream: dict[int, str]  # layer -> unit of its output
  layer_inner: dict[int, str]  # block layer -> its first inner unit
  # Units that keep the same number of channels (a bottleneck's inner units: one inner
  # width per block), groups of two or more.
  tied: tuple[tuple[str, ...], ...] = ()


def _rel(path: str) -> str:
  """A layer's path without the network's own (uniquified) name."""
  return path.split("/", 1)[1]


def _layer_of(scope: str) -> int:
  return 0 if scope == "stem" else int(scope.removeprefix("block"))


def structure(model: network_lib.SwitchableResNet) -> Structure:
  """Reads the units of `model` (one configuration: its first) off its forward pass."""
  f = Coupling()
  model.forward(f, f.input, model.configs[0])
  scopes = ["stem"] + [b.name for b in model.blocks]
  layer_stream = {_layer_of(s): f.find(f.outputs[s]) for s in scopes}
  stream_roots = set(layer_stream.values())
  # Every other conv output of a block is an inner unit of its own, in the order of the
  # block's forward pass.
  inner_roots: dict[int, list[int]] = {}
  for scope, _, _, out in f.convs:
    root = f.find(out)
    if root not in stream_roots:
      inner_roots.setdefault(_layer_of(scope), []).append(root)
  names = {}
  for layer in sorted(layer_stream):
    names.setdefault(layer_stream[layer], f"stream{layer}")
  for layer, roots in inner_roots.items():
    for i, root in enumerate(roots):
      names[root] = f"inner{layer}" + ("" if i == 0 else chr(ord("a") + i))
  width = {f.find(out): layer.filters for _, layer, _, out in f.convs}
  bns: dict[int, list[str]] = {}
  for _, layer, node in f.bns:
    bns.setdefault(f.find(node), []).append(_rel(layer.path))
  classifier = f.find(f.classifier)
  units = {}
  for root, name in names.items():
    units[name] = Unit(name=name, channels=width[root], prunable=root != classifier,
                       bns=tuple(bns.get(root, ())),
                       layers=tuple(sorted(l for l, r in layer_stream.items() if r == root)))
  conv_units = {_rel(layer.path): (names.get(f.find(x)) if f.find(x) != f.find(f.input)
                                   else None, names[f.find(y)])
                for _, layer, x, y in f.convs}
  return Structure(units=units, conv_units=conv_units,
                   bn_units={_rel(layer.path): names[f.find(n)] for _, layer, n in f.bns},
                   classifier_unit=names[classifier],
                   layer_stream={l: names[r] for l, r in layer_stream.items()},
                   layer_inner={l: names[roots[0]] for l, roots in inner_roots.items()},
                   tied=tuple(tuple(names[r] for r in roots)
                              for roots in inner_roots.values() if len(roots) > 1))


def importances(model: network_lib.SwitchableResNet, struct: Structure,
                model_index: int = 0) -> dict[str, np.ndarray]:
  """Per unit, each channel's importance: the mean |gamma| of the unit's BatchNorms."""
  gammas = {_rel(layer.path): np.abs(layer.gamma.numpy()[model_index])
            for layer in model.batchnorms() if layer.affine}
  out = {}
  for name, unit in struct.units.items():
    found = [gammas[path] for path in unit.bns if path in gammas]
    out[name] = np.mean(found, axis=0) if found else np.ones(unit.channels)
  return out


def keep_masks(struct: Structure, imp: dict[str, np.ndarray], threshold: float,
               min_keep: float, prune_last: bool = False) -> dict[str, np.ndarray]:
  """Per unit, the channels kept at `threshold`: importance >= min(threshold, the k-th
  largest of the unit), k = ceil(min_keep * channels); unprunable units keep all (the
  classifier's stream too, unless `prune_last`)."""
  masks = {}
  for group, values in decisions(struct, imp).items():
    if not (struct.units[group[0]].prunable
            or (prune_last and group[0] == struct.classifier_unit)):
      for name in group:
        masks[name] = np.ones(len(values), bool)
      continue
    k = max(1, math.ceil(min_keep * len(values)))
    kth = np.sort(values)[::-1][k - 1]
    if len(group) == 1:
      masks[group[0]] = values >= min(threshold, kth)
      continue
    count = int(np.sum(values >= min(threshold, kth)))  # `values` is sorted: the top ones.
    for name in group:
      mask = np.zeros(len(values), bool)
      mask[np.argsort(-imp[name], kind="stable")[:count]] = True
      masks[name] = mask
  return masks


def decisions(struct: Structure, imp: dict[str, np.ndarray]) -> dict[tuple[str, ...],
                                                                      np.ndarray]:
  """What the threshold is compared with, per group of units that keep one count: a
  unit alone, its importances; tied units, their importances sorted (descending) and
  averaged rank by rank, so that the group keeps as many channels as a unit whose j-th
  most important channel is the members' mean j-th."""
  tied_of = {name: group for group in struct.tied for name in group}
  out = {}
  for name in struct.units:
    group = tied_of.get(name, (name,))
    if group in out:
      continue
    if len(group) == 1:
      out[group] = imp[name]
    else:
      out[group] = np.mean([np.sort(imp[n])[::-1] for n in group], axis=0)
  return out


def pruned_space(space: spaces.SearchSpace, struct: Structure,
                 masks: dict[str, np.ndarray]) -> spaces.SearchSpace:
  """`space` with the widths that `masks` keep."""
  count = {name: int(mask.sum()) for name, mask in masks.items()}
  widths = [count[struct.layer_stream[i]] for i in range(space.num_layers)]
  inner = [count[struct.layer_inner[i]] if i in struct.layer_inner else 0
           for i in range(space.num_layers)]
  return spaces.with_widths(space, widths, inner, name=space.name)


def macs_of(space: spaces.SearchSpace, config, image_size: int, downsample: str,
            num_classes: int) -> int:
  return network_lib.costs(spaces.Config(tuple(config), space), image_size, downsample,
                           num_classes)["macs"]


@dataclasses.dataclass
class Shrunk:
  """The outcome of `shrink`."""
  space: spaces.SearchSpace
  masks: dict[str, np.ndarray]
  threshold: float
  macs: int
  target_macs: float
  # The MACs of the two neighbouring thresholds around the target (above, below): the
  # target can be missed by at most half their gap, one channel's cost.
  bracket: tuple[int, int] = (0, 0)

  @property
  def ratio(self) -> float:
    return self.macs / self.target_macs


def shrink(space: spaces.SearchSpace, struct: Structure, imp: dict[str, np.ndarray],
           config, *, target_macs: float, image_size: int, downsample: str,
           num_classes: int, min_keep: float = 0.1, prune_last: bool = False) -> Shrunk:
  """Binary-searches one global importance threshold for `target_macs`.

  MACs fall as the threshold rises, one channel (or tied group) at a time; the search
  returns the threshold whose pruned network is nearest the target (its `ratio` tells how
  near: within 0.1 % whenever the units' channels are fine-grained enough).

  Raises:
    ValueError: the target is below what `min_keep` allows or above the widened network.
  """
  def at(threshold):
    masks = keep_masks(struct, imp, threshold, min_keep, prune_last)
    candidate = pruned_space(space, struct, masks)
    return candidate, masks, macs_of(candidate, config, image_size, downsample, num_classes)

  values = np.unique(np.concatenate([v for group, v in decisions(struct, imp).items()
                                     if struct.units[group[0]].prunable or prune_last]))
  candidates = np.concatenate([[-np.inf], values, [np.inf]])
  lo, hi = 0, len(candidates) - 1  # MACs(lo) >= target > MACs(hi), if the target is inside.
  full, smallest = at(candidates[lo])[2], at(candidates[hi])[2]
  if not smallest <= target_macs <= full:
    raise ValueError(f"target {target_macs:.0f} MACs is outside what pruning can reach "
                     f"({smallest} with min_keep={min_keep} .. {full})")
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if at(candidates[mid])[2] >= target_macs:
      lo = mid
    else:
      hi = mid
  both = [at(candidates[i]) + (candidates[i],) for i in (lo, hi)]
  candidate, masks, macs, threshold = min(both, key=lambda r: abs(r[2] / target_macs - 1))
  return Shrunk(space=candidate, masks=masks, threshold=float(threshold), macs=int(macs),
                target_macs=float(target_macs), bracket=(both[0][2], both[1][2]))


def inherit(pruned: network_lib.SwitchableResNet, source: network_lib.SwitchableResNet,
            struct: Structure, masks: dict[str, np.ndarray], model_index: int = 0) -> None:
  """Sets `pruned`'s weights to the kept channels of `source`'s weight set `model_index`."""
  def idx(unit):
    return np.arange(3) if unit is None else np.flatnonzero(masks[unit])

  by_path = {_rel(v.path): v for v in source.variables}
  for var in pruned.variables:
    path = _rel(var.path)
    layer_path, _, name = path.rpartition("/")
    value = by_path[path].numpy()[model_index]
    if layer_path in struct.conv_units:
      unit_in, unit_out = struct.conv_units[layer_path]
      value = value[:, :, idx(unit_in)][:, :, :, idx(unit_out)]
    elif layer_path in struct.bn_units:
      value = value[idx(struct.bn_units[layer_path])]
    elif name == "kernel":  # The classifier reads the (unpruned) last stream.
      value = value[idx(struct.classifier_unit)]
    var.assign(value[None])
