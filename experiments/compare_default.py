r"""Retrains the default ResNet20 [4,3,3] and a searched configuration with the same budget.

  python experiments/compare_default.py --workdir=DIR --from_search=SEARCH_DIR --seeds=3
  python experiments/compare_default.py --workdir=DIR --config=5,3,2 --epochs=30

Both configurations are trained by `mixnas_tf.retrain.run` with identical settings and
seeds (every retrain flag applies to both), in DIR/default and DIR/searched. Prints a table
like the paper's (configuration, test accuracy mean +- std over seeds) and writes
DIR/comparison.json and DIR/comparison.md. Rerunning the same command resumes.
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags

from mixnas_tf import cli
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import retraining as retrain
from mixnas_tf.methods import standalone

FLAGS = flags.FLAGS


def compare(cfg: standalone.StandaloneConfig, workdir: str, *, seeds: int, export: str,
            source: dict) -> dict | None:
  """Retrains the space's default and `cfg.config` alike; returns the comparison or None."""
  space = spaces.get_space(cfg.space)
  default = spaces.to_code_string(spaces.from_stages(space, space.default))
  rows = []
  for role, config in (("default", default), ("searched", cfg.config)):
    if role == "searched" and config == default:
      # The search chose the default: one retrain serves both rows.
      rows.append({**rows[0], "role": "searched = default"})
      continue
    summary = retrain.run(dataclasses.replace(cfg, config=config),
                          os.path.join(workdir, role), seeds=seeds, export=export,
                          source=source if role == "searched" else {"config": "default"})
    if summary is None:
      return None
    rows.append({"role": role, **summary})
  comparison = {"settings": dataclasses.asdict(cfg), "seeds": seeds, "source": source,
                "rows": rows}
  workdir_lib.atomic_write_json(os.path.join(workdir, "comparison.json"), comparison)
  workdir_lib.atomic_write_text(os.path.join(workdir, "comparison.md"), table(comparison))
  return comparison


def table(comparison: dict) -> str:
  """A markdown table: configuration, reference number, MACs, parameters, accuracy."""
  seeds = comparison["seeds"]
  lines = [f"| configuration | # | MACs | params | test accuracy ({seeds} seed"
           f"{'s, mean ± std' if seeds > 1 else ''}) |",
           "|---|---|---|---|---|"]
  for row in comparison["rows"]:
    config = row["config"]
    mean, std = 100 * row["mean_test_accuracy"], row["std_test_accuracy"]
    accuracy = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {100 * std:.2f}"
    lines.append(f"| {spaces.format_stages(config['stages'])} ({row['role']}) | "
                 f"{config['index']} | {row['macs'] / 1e6:.1f} M | {row['params']:,} | "
                 f"{accuracy} |")
  first = comparison["rows"][0]
  lines.append("")
  lines.append(f"{first['dataset']}, {first['epochs']} epochs, evaluated on "
               f"{first['test_images']} images ({first['eval_split']}).")
  return "\n".join(lines) + "\n"


def main(argv):
  cli.check_no_positional(argv)
  workdir = cli.required_workdir(FLAGS.workdir)
  names = [f.name for f in dataclasses.fields(standalone.StandaloneConfig)]
  cfg, source = retrain.resolve(*cli.flag_values([*names, "from_search", "rank"]))
  cli.enable_xla_cache(FLAGS.xla_cache_dir, workdir)
  comparison = compare(cfg, workdir, seeds=FLAGS.seeds, export=FLAGS.export, source=source)
  if comparison is None:
    cli.exit_interrupted()
  print(table(comparison), end="")
  print(f"written to {os.path.join(workdir, 'comparison.json')} and comparison.md")


if __name__ == "__main__":
  retrain.define_flags()
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
  sys.exit(0)
