"""The width search command's flow: widen, search, shrink, train, export (widths.py).

    DIR/flags.json       the settings, written first
    DIR/search/          the widened network trained `search_epochs` with the l1 penalty on
                         its BatchNorm scales (a stand-alone run: resumable)
    DIR/widths.json      units, importances' summary, the threshold, the kept widths per
                         layer, MACs and parameters (widened, target, pruned); widths.png
    DIR/final/           the pruned network trained for the rest of the epoch budget, from
                         scratch or from the kept weights (--inherit); final/export/
    DIR/summary.json     what a person reads: widths, MACs, parameters, accuracy

Each stage resumes by itself: a finished stage is read back, not run again. The search
and the final training together use the budget `epochs` of a baseline run, as the
reference's protocol asks.
"""

import dataclasses
import os

from absl import logging
import numpy as np

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.analysis import plots
from mixnas_tf.exporting import keras_export
from mixnas_tf.methods import standalone
from mixnas_tf.methods import widths as widths_lib
from mixnas_tf.nn import network as network_lib

RESUMABLE_FIELDS = standalone.RESUMABLE_FIELDS


@dataclasses.dataclass(frozen=True)
class WidthConfig:
  """A width search: the stand-alone budget (`base`, whose epochs are the whole budget)
  and how to widen and shrink."""
  base: standalone.StandaloneConfig
  width_mult: float = 2.0
  flops_ratio: float = 0.25
  target_macs: float = 0.0
  search_epochs: int = 0
  gamma_l1: float = 1e-4
  min_keep: float = 0.1
  prune_last: bool = False
  inherit: bool = False
  export: bool = True

  def epochs_of_search(self) -> int:
    return self.search_epochs or max(1, round(0.1 * self.base.epochs))


def validate(wcfg: WidthConfig):
  space, config = standalone.validate(wcfg.base)
  checks = [
      (wcfg.width_mult >= 1.0, f"--width_mult must be >= 1 (received {wcfg.width_mult})"),
      (wcfg.target_macs > 0 or 0 < wcfg.flops_ratio <= 1,
       f"--flops_ratio must be in (0, 1] (received {wcfg.flops_ratio}), or give "
       "--target_macs"),
      (wcfg.target_macs >= 0, f"--target_macs must be >= 0 (received {wcfg.target_macs})"),
      (wcfg.gamma_l1 >= 0, f"--gamma_l1 must be >= 0 (received {wcfg.gamma_l1})"),
      (0 < wcfg.min_keep <= 1, f"--min_keep must be in (0, 1] (received {wcfg.min_keep})"),
      (0 < wcfg.epochs_of_search() < wcfg.base.epochs,
       f"--search_epochs must leave epochs to train the pruned network: 0 < "
       f"{wcfg.epochs_of_search()} < --epochs={wcfg.base.epochs}"),
      (wcfg.base.downsample in ("maxpool", "avgpool", "conv"),
       "the width search prunes fixed-op networks (--downsample maxpool, avgpool or conv)"),
      (not wcfg.base.widths, "--widths are what the width search finds; leave them out"),
  ]
  for ok, message in checks:
    if not ok:
      raise errors.UsageError(message)
  return space, config


def widened(space: spaces.SearchSpace, mult: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Every layer's output and inner width times `mult` (rounded)."""
  wide = tuple(int(round(mult * w)) for w in space.widths)
  inner = tuple(int(round(mult * space.inner_width(i))) if i else 0
                for i in range(space.num_layers))
  return wide, inner


@workdir_lib.holding
def run_widths(wcfg: WidthConfig, workdir: str) -> dict | None:
  """Runs (or resumes) the width search in `workdir`; returns summary.json, None if
  interrupted."""
  space, config = validate(wcfg)
  workdir = os.path.abspath(workdir)
  summary_path = os.path.join(workdir, "summary.json")
  flags = {**dataclasses.asdict(wcfg.base), **{f.name: getattr(wcfg, f.name)
                                               for f in dataclasses.fields(wcfg)
                                               if f.name != "base"}}
  defaults = {**dataclasses.asdict(standalone.StandaloneConfig()),
              **{f.name: f.default for f in dataclasses.fields(WidthConfig)
                 if f.name != "base"}}
  workdir_lib.prepare(workdir, flags, ignore=RESUMABLE_FIELDS, defaults=defaults)
  if os.path.exists(summary_path):
    return workdir_lib.read_json(summary_path)
  loaded = standalone.load_data(wcfg.base)
  dataset = loaded[0]
  search_epochs = wcfg.epochs_of_search()
  wide, wide_inner = widened(space, wcfg.width_mult)

  # 1. The widened network learns which channels matter.
  search_cfg = dataclasses.replace(wcfg.base, widths=wide, inner_widths=wide_inner,
                                   gamma_l1=wcfg.gamma_l1, epochs=search_epochs)
  search_dir = os.path.join(workdir, "search")
  if standalone.train_standalone(search_cfg, search_dir, loaded=loaded) is None:
    return None

  # 2. One global threshold shrinks it to the target.
  source, _ = standalone.restore_model(search_dir)
  struct = widths_lib.structure(source)
  imp = widths_lib.importances(source, struct)
  wide_space = source.space
  cost = dict(image_size=dataset.image_size, downsample=wcfg.base.downsample,
              num_classes=dataset.num_classes)
  wide_macs = widths_lib.macs_of(wide_space, config, **cost)
  base_macs = widths_lib.macs_of(space, config, **cost)
  target = wcfg.target_macs or wcfg.flops_ratio * wide_macs
  try:
    shrunk = widths_lib.shrink(wide_space, struct, imp, config, target_macs=target,
                               min_keep=wcfg.min_keep, prune_last=wcfg.prune_last, **cost)
  except ValueError as e:
    raise errors.UsageError(f"cannot shrink to the target: {e}") from None
  if abs(shrunk.ratio - 1) > 1e-3:
    logging.warning("Pruned MACs are %.4f of the target: the units' channels are too "
                    "coarse to come within 0.1%%.", shrunk.ratio)
  pruned = shrunk.space
  widths_info = {
      "config": config.record(), "space": space.name, "width_mult": wcfg.width_mult,
      "units": {name: {"channels": u.channels, "kept": int(shrunk.masks[name].sum()),
                       "prunable": u.prunable, "layers": list(u.layers),
                       "importance": {"min": float(imp[name].min()),
                                      "median": float(np.median(imp[name])),
                                      "max": float(imp[name].max())}}
                for name, u in struct.units.items()},
      "threshold": shrunk.threshold,
      "widths": {"default": list(space.widths), "widened": list(wide),
                 "pruned": list(pruned.widths)},
      "inner_widths": {"default": [space.inner_width(i) if i else 0
                                   for i in range(space.num_layers)],
                       "widened": list(wide_inner), "pruned": list(pruned.inner_widths)},
      "macs": {"default": base_macs, "widened": wide_macs, "target": target,
               "pruned": shrunk.macs, "pruned_over_target": shrunk.ratio},
      "keep": {name: np.flatnonzero(mask).tolist() for name, mask in shrunk.masks.items()},
  }
  workdir_lib.atomic_write_json(os.path.join(workdir, "widths.json"), widths_info)
  plots.layer_widths({"default": space.widths, "widened": wide, "pruned": pruned.widths},
                     {"default": widths_info["inner_widths"]["default"],
                      "pruned": pruned.inner_widths},
                     os.path.join(workdir, "widths.png"),
                     title=f"{space.name} {config.label}: widths per layer")

  # 3. The pruned network trains for the rest of the budget, without the search's l1
  # penalty (plain SGD, as the baseline it is compared with; the command line's
  # --gamma_l1 also reaches `base`, whose fields share its flags).
  final_cfg = dataclasses.replace(wcfg.base, widths=pruned.widths,
                                  inner_widths=pruned.inner_widths, gamma_l1=0.0,
                                  epochs=wcfg.base.epochs - search_epochs)

  def initialize(model):
    widths_lib.inherit(model, source, struct, shrunk.masks)

  final_dir = os.path.join(workdir, "final")
  metrics = standalone.train_standalone(final_cfg, final_dir, loaded=loaded,
                                        initialize=initialize if wcfg.inherit else None)
  if metrics is None:
    return None
  export = keras_export.export(final_dir) if wcfg.export else None
  model = network_lib.costs(spaces.Config(tuple(config), pruned), dataset.image_size,
                            wcfg.base.downsample, dataset.num_classes)
  summary = {
      "config": config.record(), "space": space.name, "dataset": wcfg.base.dataset,
      "widths": list(pruned.widths), "inner_widths": list(pruned.inner_widths),
      "macs": model["macs"], "params": model["params"],
      "default_macs": base_macs, "widened_macs": wide_macs, "target_macs": target,
      "macs_over_target": shrunk.ratio, "test_accuracy": metrics["test_accuracy"],
      "eval_split": metrics["eval_split"], "search_epochs": search_epochs,
      "final_epochs": final_cfg.epochs, "inherit": wcfg.inherit,
      "search_seconds": workdir_lib.read_json(
          os.path.join(search_dir, "metrics.json")).get("train_seconds"),
      "final_seconds": metrics.get("train_seconds"),
      "export": os.path.join(final_dir, "export") if export else None,
  }
  workdir_lib.atomic_write_json(summary_path, summary)
  return summary
