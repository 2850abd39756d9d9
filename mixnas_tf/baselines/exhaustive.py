r"""Exhaustive ground truth: every configuration trained stand-alone with one budget.

  python -m mixnas_tf.exhaustive --workdir=DIR [--configs=all] [--seeds=1] --epochs=E ...
  python -m mixnas_tf.exhaustive --workdir=DIR --shard=I/N ...      (writes DIR/shard_I_of_N)
  python -m mixnas_tf.exhaustive merge --out=TABLE DIR_OR_TABLE [DIR_OR_TABLE ...]

Each (configuration, seed) is one `standalone.train_standalone` run in
DIR/runs/<reference number>_seed<s>/ (the same network builder, train step and loop as
the search and the retraining; checkpoints and resume inside a run). When every seed of a
configuration is done, its row is added to DIR/table.csv (rewritten atomically), so a
stopped run, started again with the same command, skips the finished configurations and
resumes the unfinished one from its checkpoint.

table.csv has the columns of the reference CSV it is compared with
(`../shared/reference/resnet20_cifar10_configs.csv`):
  architecture,stages,baseline_avg,baseline_stdev,seeds,macs,params
with accuracies in percent: the mean over seeds and the sample standard deviation
(empty for one seed). All seeds and configurations share one data split (drawn from
--data_seed), so they differ in initialisation, data order and augmentation only.

`--shard=I/N` trains the configurations whose position in --configs is I mod N, in
DIR/shard_I_of_N/, so N processes or machines can share the work; `merge` joins their
tables (a directory argument stands for all its shard_*/table.csv, or else its table.csv),
refuses a configuration listed twice with different values or shards trained with
different settings, and reports the configurations that no table holds.
"""

from collections.abc import Callable
from collections.abc import Iterable
import csv
import dataclasses
import glob
import io
import math
import os
import re
import time

from absl import logging

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import standalone
from mixnas_tf.training import pace as pace_lib

TABLE_COLUMNS = ("architecture", "stages", "baseline_avg", "baseline_stdev", "seeds", "macs",
                 "params")
# flags.json entries that may differ between shards of one table, or on resume.
SHARD_FIELDS = frozenset({"shard"})
RESUMABLE_FIELDS = standalone.RESUMABLE_FIELDS


def parse_shard(text: str) -> tuple[int, int]:
  """"I/N" -> (I, N) with 0 <= I < N.

  Raises:
    errors.UsageError: anything else.
  """
  match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
  if not match:
    raise errors.UsageError(f"--shard must be I/N, e.g. 0/4 (received {text!r})")
  index, count = int(match.group(1)), int(match.group(2))
  if count < 1 or not 0 <= index < count:
    raise errors.UsageError(f"--shard={text}: I must be in 0..N-1 and N >= 1 "
                            f"(received I={index}, N={count})")
  return index, count


def shard_configs(configs: Iterable[spaces.Config], shard: tuple[int, int]) -> list[spaces.Config]:
  """The configurations at positions p with p mod N == I."""
  index, count = shard
  return [c for p, c in enumerate(configs) if p % count == index]


def shard_dir(workdir: str, shard: tuple[int, int]) -> str:
  """DIR for an unsharded run, DIR/shard_I_of_N for shard I of N."""
  index, count = shard
  return workdir if count == 1 else os.path.join(workdir, f"shard_{index}_of_{count}")


def run_dir(workdir: str, index: int, seed: int) -> str:
  return os.path.join(workdir, "runs", f"{index}_seed{seed}")


def table_row(space: spaces.SearchSpace, config: spaces.Config, runs: list[dict]) -> dict:
  """The table row (strings, as read back) of `config` from its runs' metrics.json."""
  accuracies = [100.0 * r["test_accuracy"] for r in runs]
  n = len(accuracies)
  mean = sum(accuracies) / n
  # Sample standard deviation, as retrain's summary; undefined for one seed.
  std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (n - 1)) if n > 1 else None
  return {"architecture": str(spaces.to_index(space, config)),
          "stages": spaces.format_stages(spaces.to_stages(space, config)),
          "baseline_avg": f"{mean:.4f}",
          "baseline_stdev": "" if std is None else f"{std:.4f}",
          "seeds": str(n), "macs": str(runs[0]["macs"]), "params": str(runs[0]["params"])}


def write_table(path: str, rows: Iterable[dict]) -> None:
  """Writes rows (sorted by reference number) atomically."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS, lineterminator="\n")
  writer.writeheader()
  for row in sorted(rows, key=lambda r: int(r["architecture"])):
    writer.writerow({k: row[k] for k in TABLE_COLUMNS})
  workdir_lib.atomic_write_text(path, out.getvalue())


def read_table(path: str) -> list[dict]:
  """Rows of a table.csv as dicts of strings.

  Raises:
    errors.UsageError: unreadable, or not this module's columns.
  """
  try:
    with open(path, newline="") as f:
      reader = csv.DictReader(f)
      rows = list(reader)
      header = reader.fieldnames or []
  except OSError as e:
    raise errors.UsageError(f"cannot read {path}: {e.strerror}") from None
  if tuple(header) != TABLE_COLUMNS:
    raise errors.UsageError(f"{path} is not an exhaustive table (columns "
                            f"{','.join(header)}; expected {','.join(TABLE_COLUMNS)})")
  return rows


@workdir_lib.holding
def run_exhaustive(cfg: standalone.StandaloneConfig, workdir: str, *, configs: str = "all",
                   seeds: int = 1, shard: tuple[int, int] = (0, 1),
                   after_step: Callable[[int], None] | None = None) -> list[dict] | None:
  """Trains every configuration of `configs` (this shard's) for `seeds` seeds; resumable.

  Args:
    cfg: the budget and data of every run (`cfg.config` is ignored; `cfg.seed` is the
      first seed; `cfg.data_seed` draws the data split).
    workdir: DIR; a shard works in DIR/shard_I_of_N.
    configs: ';'-separated configurations, or "all".
    seeds: seeds per configuration: cfg.seed .. cfg.seed + seeds - 1.
    shard: (I, N): train the configurations at positions p with p mod N == I.
    after_step: test hook passed to every run.

  Returns:
    The table's rows, or None if a run was interrupted (the table holds the configurations
    finished so far).

  Raises:
    errors.UsageError: invalid settings, or DIR holds a run with other settings.
  """
  space = standalone.validate_settings(cfg)
  requested = spaces.parse_configs(space, configs)
  if seeds < 1:
    raise errors.UsageError(f"--seeds must be >= 1 (received {seeds})")
  index, count = shard
  if count < 1 or not 0 <= index < count:
    raise errors.UsageError(f"shard must be I/N with 0 <= I < N (received {index}/{count})")
  mine = shard_configs(requested, shard)
  directory = shard_dir(os.path.abspath(workdir), shard)
  settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "config"}
  workdir_lib.prepare(
      directory, {**settings, "configs": [spaces.to_index(space, c) for c in requested],
                  "seeds": seeds, "shard": f"{index}/{count}"},
      ignore=RESUMABLE_FIELDS, defaults=dataclasses.asdict(standalone.StandaloneConfig()),
      extra={"exhaustive.json": {"configs": [spaces.to_index(space, c) for c in requested],
                                 "shard_configs": [spaces.to_index(space, c) for c in mine],
                                 "space": space.name}})
  table_path = os.path.join(directory, "table.csv")
  rows = {}
  if os.path.exists(table_path):
    rows = {int(r["architecture"]): r for r in read_table(table_path)}
  todo = [c for c in mine if spaces.to_index(space, c) not in rows]
  logging.info("%s: %d of this shard's %d configurations done, %d to train (x%d seeds).",
               directory, len(mine) - len(todo), len(mine), len(todo), seeds)
  loaded = None
  pace = pace_lib.Pace(0, len(todo))
  for done, config in enumerate(todo, start=1):
    number = spaces.to_index(space, config)
    stages = spaces.format_stages(spaces.to_stages(space, config))
    t0 = time.time()
    runs = []
    for seed in range(cfg.seed, cfg.seed + seeds):
      path = run_dir(directory, number, seed)
      if os.path.exists(os.path.join(path, "metrics.json")):
        runs.append(workdir_lib.read_json(os.path.join(path, "metrics.json")))
        continue
      if loaded is None:
        # One split for every run, drawn from --data_seed, as in retrain.
        loaded = standalone.load_data(cfg)
      print(f"[{len(rows) + 1}/{len(mine)}] {number} {stages} seed {seed}: {path}",
            flush=True)
      metrics = standalone.train_standalone(
          dataclasses.replace(cfg, config=spaces.to_code_string(config), seed=seed), path,
          after_step=after_step, loaded=loaded)
      if metrics is None:
        return None
      runs.append(metrics)
    rows[number] = table_row(space, config, runs)
    write_table(table_path, rows.values())
    std = rows[number]["baseline_stdev"]
    print(f"[{len(rows)}/{len(mine)}] {number} {stages}: {rows[number]['baseline_avg']} %"
          f"{' +- ' + std if std else ''} ({(time.time() - t0) / 60:.1f} min; "
          f"{pace.eta(done)} for this shard)", flush=True)
  return [rows[spaces.to_index(space, c)] for c in mine if spaces.to_index(space, c) in rows]


def _tables_of(path: str) -> list[str]:
  """The table.csv files a merge argument stands for."""
  if os.path.isdir(path):
    # Shards first: DIR/table.csv may be an earlier merge of them (merge --out=DIR/table.csv).
    tables = sorted(glob.glob(os.path.join(path, "shard_*", "table.csv")))
    if tables:
      return tables
    if os.path.exists(os.path.join(path, "table.csv")):
      return [os.path.join(path, "table.csv")]
    raise errors.UsageError(f"{path} holds no shard_*/table.csv and no table.csv")
  if not os.path.exists(path):
    raise errors.UsageError(f"{path} does not exist (give exhaustive directories or "
                            "table.csv files)")
  return [path]


def merge(inputs: list[str], out: str, space_name: str = "resnet20") -> dict:
  """Joins exhaustive tables into `out`.

  Args:
    inputs: directories (every shard_*/table.csv in them, or else their table.csv) or
      table files.
    out: the merged table's path (written atomically).
    space_name: the space whose configurations are expected when no input records them.

  Returns:
    {"rows": number of configurations written, "tables": files read, "missing":
    expected reference numbers that no table holds, "expected_from": where the
    expected set came from, "identical_duplicates": reference numbers found more than
    once with equal rows}.

  Raises:
    errors.UsageError: no input, a configuration in two tables with different values, or
      tables whose runs used different settings (other than the shard).
  """
  if not inputs:
    raise errors.UsageError("merge needs at least one exhaustive directory or table.csv")
  tables = [t for path in inputs for t in _tables_of(path)]
  merged: dict[int, tuple[dict, str]] = {}
  duplicates = set()
  expected: set[int] = set()
  settings, settings_from = None, None
  for table in tables:
    flags_path = os.path.join(os.path.dirname(table), "flags.json")
    if os.path.exists(flags_path):
      saved = workdir_lib.read_json(flags_path)
      expected.update(saved.get("configs", []))
      comparable = {k: v for k, v in saved.items()
                    if k not in SHARD_FIELDS and k not in RESUMABLE_FIELDS}
      if settings is None:
        settings, settings_from = comparable, flags_path
      elif comparable != settings:
        differ = sorted(k for k in set(settings) | set(comparable)
                        if settings.get(k) != comparable.get(k))
        raise errors.UsageError(
            f"{flags_path} and {settings_from} were trained with different settings ("
            f"{', '.join(f'{k}: {settings.get(k)!r} vs {comparable.get(k)!r}' for k in differ[:3])}"
            "); only tables of one budget can be merged")
    for row in read_table(table):
      number = int(row["architecture"])
      if number in merged:
        other, where = merged[number]
        if other != row:
          differ = [k for k in TABLE_COLUMNS if other[k] != row[k]]
          raise errors.UsageError(
              f"configuration {number} {row['stages']} is in {where} and {table} with "
              f"different values ({', '.join(f'{k} {other[k]} vs {row[k]}' for k in differ)})")
        duplicates.add(number)
        continue
      merged[number] = (row, table)
  if expected:
    expected_from = "the inputs' flags.json (--configs)"
  else:
    space = spaces.get_space(space_name)
    expected = set(range(space.reference_base, space.reference_base + space.num_configs))
    expected_from = f"the whole {space.name} space"
  write_table(out, [row for row, _ in merged.values()])
  return {"rows": len(merged), "tables": tables, "missing": sorted(expected - set(merged)),
          "expected_from": expected_from, "identical_duplicates": sorted(duplicates)}
