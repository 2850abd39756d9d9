r"""Retraining a chosen configuration from scratch, over one or several seeds, and exporting it.

  python -m mixnas_tf.retrain --workdir=DIR --config=5,3,2 [--seeds=3]
  python -m mixnas_tf.retrain --workdir=DIR --from_search=SEARCH_DIR [--rank=2]

Each seed s is one `standalone.train_standalone` run in DIR/seed_<s>/ (same network
builder, train step and loop as the search; flags first, TensorBoard, checkpoints,
resume, atomic metrics.json). DIR/flags.json holds the resolved settings before the first
step; DIR/summary.json (written atomically when every seed is done) holds the per-seed
test accuracies, their mean and sample standard deviation, the configuration, its
parameters and multiply-accumulates. The first seed's model (or each seed's) is then
exported (export.py). The same command on the same DIR resumes; finished seeds are
skipped; a larger --seeds adds seeds to a finished DIR.

The library part (`search_choice`, `resolve`, `run`) is what tests and
experiments/compare_default.py call; `main` only reads flags.
"""

from collections.abc import Callable
from collections.abc import Iterable
import dataclasses
import math
import os

from absl import logging

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.exporting import keras_export as export_lib
from mixnas_tf.methods import standalone
from mixnas_tf.training import trainer as trainer_lib

EXPORT_MODES = ("first", "each", "none")
# A search's settings that give its configurations their meaning; a retrain
# `--from_search` takes them from the search's flags.json unless they are given.
INHERITED_FROM_SEARCH = ("dataset", "tfds_data_dir", "image_size", "space", "downsample")
# DIR/flags.json entries that may change when DIR is run again: they change neither
# the runs nor their results (more seeds add runs, they do not change the others).
RESUMABLE_FIELDS = standalone.RESUMABLE_FIELDS | {"seeds", "export", "from_search", "rank"}


@dataclasses.dataclass(frozen=True)
class SearchChoice:
  """A configuration picked from a search's results.json.

  Attributes:
    config: its 0/1 code string ("0,0,0,0,1,0,0,1,0,0").
    index: its reference number.
    rank: its rank in the search's ranking (1 = best).
    settings: the search's values of INHERITED_FROM_SEARCH (those it recorded).
  """
  config: str
  index: int
  rank: int
  settings: dict


def search_choice(search_dir: str, rank: int | None = None) -> SearchChoice:
  """The best configuration of a finished search, or the `rank`-th of its ranking.

  Args:
    search_dir: a `python -m mixnas_tf.train` work directory.
    rank: 1-based position in results.json's "ranking"; None takes its "best".

  Raises:
    errors.UsageError: no results.json (search absent or unfinished), a malformed one, or
      a rank outside 1..number of ranked configurations.
  """
  search_dir = os.path.abspath(os.path.expanduser(search_dir))
  path = os.path.join(search_dir, "results.json")
  if not os.path.isfile(path):
    raise errors.UsageError(
        f"{search_dir} holds no search results (no results.json); give the work directory "
        "of a finished `python -m mixnas_tf.train` run, or run it again to finish it")
  try:
    results = workdir_lib.read_json(path)
    ranking = [int(i) for i in results["ranking"]]
    best = int(results["best"]["index"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.UsageError(f"{path} is not a search's results ({type(e).__name__}: {e}); "
                            "expected 'best' and 'ranking' entries") from None
  settings = {"space": results.get("space", "resnet20")}
  flags_path = os.path.join(search_dir, "flags.json")
  if os.path.isfile(flags_path):
    searched = workdir_lib.read_json(flags_path)
    settings.update({k: searched[k] for k in INHERITED_FROM_SEARCH if k in searched})
  if "dataset" not in settings and results.get("dataset"):
    settings["dataset"] = results["dataset"]
  space = spaces.get_space(settings["space"])
  if rank is None:
    index, rank = best, (ranking.index(best) + 1 if best in ranking else 1)
  elif not 1 <= rank <= len(ranking):
    raise errors.UsageError(f"--rank={rank} is beyond the {len(ranking)} configurations "
                            f"ranked in {path}; accepted: 1..{len(ranking)}")
  else:
    index = ranking[rank - 1]
  try:
    config = spaces.from_index(space, index)
  except ValueError as e:
    raise errors.UsageError(f"{path}: {e}") from None
  return SearchChoice(config=spaces.to_code_string(config), index=index, rank=rank,
                      settings=settings)


def resolve(values: dict, given: Iterable[str] = ()) -> tuple[standalone.StandaloneConfig,
                                                               dict]:
  """Turns flag values into the run's settings and the configuration's source.

  Args:
    values: flag name -> value: StandaloneConfig fields, plus optionally "from_search"
      (a search directory or None) and "rank" (int or None).
    given: names of the flags the user set explicitly (they win over a search's).

  Returns:
    (cfg, source): cfg with `config` as a 0/1 code, validated; source says where the
    configuration came from ({"config": text} or {"from_search": dir, "rank", "index"}).

  Raises:
    errors.UsageError: contradictory or invalid settings.
  """
  given = set(given)
  fields = {f.name for f in dataclasses.fields(standalone.StandaloneConfig)}
  chosen = {k: v for k, v in values.items() if k in fields}
  if "step_boundaries" in chosen:
    chosen["step_boundaries"] = trainer_lib.OptimConfig.parse_boundaries(
        chosen["step_boundaries"])
  from_search, rank = values.get("from_search"), values.get("rank")
  if from_search:
    if "config" in given:
      raise errors.UsageError("give the configuration either as --config or as "
                              "--from_search, not both")
    choice = search_choice(from_search, rank)
    inherited = {k: v for k, v in choice.settings.items() if k not in given}
    chosen.update(inherited, config=choice.config)
    source = {"from_search": os.path.abspath(from_search), "rank": choice.rank,
              "index": choice.index, "inherited": inherited}
  else:
    if rank is not None:
      raise errors.UsageError("--rank needs --from_search (the search whose ranking it "
                              "indexes)")
    source = {"config": chosen.get("config", standalone.StandaloneConfig.config)}
  cfg = standalone.StandaloneConfig(**chosen)
  space, config = standalone.validate(cfg)
  return dataclasses.replace(cfg, config=spaces.to_code_string(config)), source


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def summarize(cfg: standalone.StandaloneConfig, runs: list[dict]) -> dict:
  """Mean and sample standard deviation (ddof=1; None for one seed) of test accuracy."""
  accuracies = [r["test_accuracy"] for r in runs]
  n = len(accuracies)
  mean = sum(accuracies) / n
  std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (n - 1)) if n > 1 else None
  first = runs[0]
  return {
      "config": first["config"],
      "dataset": cfg.dataset,
      "downsample": cfg.downsample,
      "epochs": cfg.epochs,
      "eval_split": first["eval_split"],
      "test_images": first["test_images"],
      "seeds": [r["seed"] for r in runs],
      "test_accuracy": accuracies,
      "test_loss": [r["test_loss"] for r in runs],
      "train_seconds": [r.get("train_seconds") for r in runs],
      "mean_test_accuracy": mean,
      "std_test_accuracy": std,
      "params": first["params"],
      "macs": first["macs"],
  }


@workdir_lib.holding
def run(cfg: standalone.StandaloneConfig, workdir: str, *, seeds: int = 1,
        export: str = "first", source: dict | None = None,
        after_step: Callable[[int], None] | None = None) -> dict | None:
  """Trains `cfg` for seeds cfg.seed .. cfg.seed+seeds-1, summarises and exports.

  All seeds share the data of one `standalone.load_data` call, with the splits drawn
  from `cfg.data_seed`: every seed is evaluated on the same images, and differs in
  initialisation, data order and augmentation only.

  Args:
    cfg: the settings (its `seed` is the first seed).
    workdir: DIR; seed s trains in DIR/seed_<s>.
    seeds: how many seeds to train; the summary also covers the seeds after them that an
      earlier sitting with a larger `seeds` finished in DIR.
    export: "first" exports the first seed's model to DIR/export, "each" every seed's to
      DIR/seed_<s>/export, "none" nothing.
    source: where the configuration came from (recorded in DIR/flags.json).
    after_step: test hook passed to every run (global step of that run).

  Returns:
    The summary (also DIR/summary.json), or None if a run was interrupted.

  Raises:
    errors.UsageError: invalid settings, or DIR holds a retrain with other settings.
  """
  if seeds < 1:
    raise errors.UsageError(f"--seeds must be >= 1 (received {seeds})")
  if export not in EXPORT_MODES:
    raise errors.UsageError(f"--export must be one of {', '.join(EXPORT_MODES)} "
                            f"(received {export})")
  space, config = standalone.validate(cfg)
  workdir = os.path.abspath(workdir)
  source = source or {"config": cfg.config}
  workdir_lib.prepare(workdir, {**dataclasses.asdict(cfg), "seeds": seeds, "export": export,
                                "from_search": source.get("from_search"),
                                "rank": source.get("rank")},
                      ignore=RESUMABLE_FIELDS,
                      defaults=dataclasses.asdict(standalone.StandaloneConfig()),
                      extra={"retrain.json": {"config": config.record(), "source": source}})
  loaded = None
  runs = []
  for seed in range(cfg.seed, cfg.seed + seeds):
    directory = seed_dir(workdir, seed)
    metrics_path = os.path.join(directory, "metrics.json")
    if os.path.exists(metrics_path):
      # Finished: no need to load the data or build anything for it.
      runs.append(workdir_lib.read_json(metrics_path))
      continue
    if loaded is None:
      loaded = standalone.load_data(cfg)
    logging.info("Seed %d of %s: %s", seed, spaces.format_stages(spaces.to_stages(space, config)),
                 directory)
    metrics = standalone.train_standalone(dataclasses.replace(cfg, seed=seed), directory,
                                          after_step=after_step, loaded=loaded)
    if metrics is None:
      return None
    runs.append(metrics)
  # Seeds an earlier sitting with a larger --seeds finished count too: a smaller --seeds
  # never replaces a summary with one over fewer seeds.
  seed = cfg.seed + seeds
  while os.path.exists(os.path.join(seed_dir(workdir, seed), "metrics.json")):
    runs.append(workdir_lib.read_json(os.path.join(seed_dir(workdir, seed), "metrics.json")))
    seed += 1
  summary = summarize(cfg, runs)
  summary["runs"] = [seed_dir(workdir, r["seed"]) for r in runs]
  if export != "none":
    targets = runs[:1] if export == "first" else runs
    summary["exports"] = []
    for r in targets:
      run_dir = seed_dir(workdir, r["seed"])
      out = os.path.join(workdir if export == "first" else run_dir, "export")
      export_lib.export(run_dir, out)
      summary["exports"].append(out)
  workdir_lib.atomic_write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def format_accuracy(summary: dict) -> str:
  """"91.23 +- 0.15 %" (or "91.23 %" for one seed)."""
  mean, std = 100 * summary["mean_test_accuracy"], summary["std_test_accuracy"]
  return f"{mean:.2f} %" if std is None else f"{mean:.2f} +- {100 * std:.2f} %"
