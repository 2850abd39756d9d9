r"""A Markdown report with PNG plots of one or several searches, against the truth.

  python -m mixnas_tf.report --search=DIR[,DIR2,...] [--ground_truth=TABLE[:COLUMN]] \
      [--tuner=DIR[,DIR2,...]] --out=OUT

Writes OUT/report.md and its PNGs:
  - a summary of each search (K, epochs, chosen configuration, time) and KerasTuner run;
  - with --ground_truth: the rank metrics of every search and tuner (mixnas_tf.rank) and
    estimated vs true accuracy per configuration, the points labelled [a,b,c] where the
    label fits;
  - accuracy against multiply-accumulates, the Pareto front (the configurations no other
    beats at lower or equal cost) marked: the view a user picks a network from;
  - per search: the assignment matrix p(weight set | configuration), the score matrix W
    at a few epochs, the weight sets' shares, the temperature and the assignment of every
    configuration over the epochs (from state.json's history);
  - training curves of all searches.
Several searches (K = 1, 2, 4, 8, ...) are laid out side by side.
"""

import dataclasses
import os
import re

# plots imports matplotlib with the Agg backend first.
from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.analysis import plots
from mixnas_tf.analysis import rank
from mixnas_tf.analysis import sources
from mixnas_tf.analysis import report_figures


@dataclasses.dataclass
class Search:
  """A finished search's files.

  Attributes:
    name: its label in the report.
    path: its work directory.
    results: results.json.
    flags: flags.json.
    searched: reference numbers of the searched configurations, in the row order of the
      score and assignment matrices.
    history: state.json's per-epoch records ([] if absent).
  """
  name: str
  path: str
  results: dict
  flags: dict
  searched: list[int]
  history: list[dict]

  @property
  def estimate(self) -> dict[int, float]:
    """Estimated accuracy in percent per reference number."""
    return {r["index"]: 100.0 * r["estimated_accuracy"] for r in self.results["configs"]
            if r["estimated_accuracy"] is not None}  # None: left out of the final evaluation.


def load_search(path: str, name: str | None = None) -> Search:
  """Reads a search work directory.

  Raises:
    errors.UsageError: the directory holds no finished search.
  """
  path = os.path.abspath(os.path.expanduser(path))
  results_path = os.path.join(path, "results.json")
  if not os.path.isfile(results_path):
    raise errors.UsageError(f"{path} holds no finished search (no results.json); give the "
                            "work directory of a finished `python -m mixnas_tf.train` run")
  results = workdir_lib.read_json(results_path)
  flags_json = _read_optional(os.path.join(path, "flags.json"), {})
  space_json = _read_optional(os.path.join(path, "search_space.json"), {})
  state = _read_optional(os.path.join(path, "state.json"), {})
  searched = space_json.get("searched") or [r["index"] for r in results["configs"]]
  return Search(name=name or os.path.basename(path.rstrip("/")), path=path, results=results,
                flags=flags_json, searched=[int(i) for i in searched],
                history=state.get("history", []))


def _read_optional(path: str, default):
  return workdir_lib.read_json(path) if os.path.exists(path) else default


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "run"


def _unique_names(paths: list[str]) -> list[str]:
  """Base names, with the parent folder added where two would be equal."""
  names = [os.path.basename(os.path.abspath(p).rstrip("/")) for p in paths]
  return [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), n)
          if names.count(n) > 1 else n for p, n in zip(paths, names)]


# ----------------------------------------------------------------------------
# The report.


def _fmt(value, spec=".3f") -> str:
  return "n/a" if value is None else format(value, spec)


def _minutes(seconds) -> str:
  return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def _image_row(names: list[str], images: list[str | None]) -> list[str]:
  """A Markdown table laying images side by side, one column per run."""
  return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names),
          "| " + " | ".join(f"![{n}]({i})" if i else "(no history)"
                           for n, i in zip(names, images)) + " |", ""]


def _macs_by_index(searches: list[Search], truth_macs: dict | None) -> dict[int, int]:
  """MACs per reference number: the truth table's column, else the searches' records."""
  macs = {}
  for search in searches:
    macs.update({r["index"]: int(r["macs"]) for r in search.results["configs"]})
  macs.update({i: int(v) for i, v in (truth_macs or {}).items()})
  return macs


def build_report(search_dirs: list[str], out: str, ground_truth: str | None = None,
                 tuner_dirs: list[str] = (), space_name: str | None = None,
                 command: str | None = None) -> str:
  """Writes OUT/report.md and its plots; returns the report's path.

  Args:
    search_dirs: search work directories (each with results.json).
    out: output directory.
    ground_truth: FILE[:COLUMN] of true accuracies (mixnas_tf.rank sources).
    tuner_dirs: mixnas_tf.tune work directories.
    space_name: the search space of the reference numbers; None: the searches' own
      (`results.json`'s `space`), which must then be one.
    command: the command line, quoted in the report.

  Raises:
    errors.UsageError: a directory without results, or an unreadable ground truth.
  """
  if not search_dirs:
    raise errors.UsageError("--search needs at least one search work directory")
  searches = [load_search(p, n) for p, n in zip(search_dirs, _unique_names(search_dirs))]
  searched_spaces = {s.results.get("space", "resnet20") for s in searches}
  if space_name is None:
    if len(searched_spaces) > 1:
      raise errors.UsageError(f"the searches are of different spaces "
                              f"({', '.join(sorted(searched_spaces))}); report them apart")
    space_name = searched_spaces.pop()
  elif searched_spaces != {space_name}:
    raise errors.UsageError(f"--space={space_name}, but the searches are of "
                            f"{', '.join(sorted(searched_spaces))}; leave --space out")
  space = spaces.get_space(space_name)
  tuners = []  # (name, accuracies, tune_results.json or None for a bare KerasTuner project)
  for p, n in zip(tuner_dirs, _unique_names(list(tuner_dirs))):
    tuner = sources.read(p, space)
    if tuner.kind != "tuner":
      raise errors.UsageError(f"--tuner={p} is not a KerasTuner run (mixnas_tf.tune)")
    data = workdir_lib.read_json(tuner.path) if tuner.path.endswith(".json") else None
    tuners.append((n, tuner, data))
  truth = sources.read(ground_truth, space) if ground_truth else None
  truth_macs = None
  if truth is not None and truth.kind == "csv":
    try:
      truth_macs = sources.read(f"{truth.path}:macs", space).values
    except errors.UsageError:
      truth_macs = None  # The reference CSV has no MACs: the searches' records give them.
  os.makedirs(out, exist_ok=True)
  estimates = ([(s.name, s.estimate) for s in searches] +
               [(f"KerasTuner {n}", t.values) for n, t, _ in tuners])
  lines = ["# Search report", ""]
  if command:
    lines += ["Generated by:", "", "    " + command, ""]

  lines += ["## Searches", "",
            "| search | K | epochs | configurations | search-train / val images | chosen "
            "(estimated accuracy) | train | compile | final eval |",
            "|---|---|---|---|---|---|---|---|---|"]
  for s in searches:
    best = s.results["best"]
    split = _read_optional(os.path.join(s.path, "search_space.json"), {}).get("split", {})
    lines.append(
        f"| {s.name} | {s.results['num_models']} | {s.flags.get('epochs', 'n/a')} | "
        f"{len(s.searched)} | {split.get('search_train', 'n/a')} / "
        f"{split.get('search_val', 'n/a')} | {best['index']} "
        f"{spaces.format_stages(best['stages'])} ({100 * best['estimated_accuracy']:.2f} %) | "
        f"{_minutes(s.results.get('train_seconds'))} | "
        f"{_minutes(s.results.get('compile_seconds'))} | "
        f"{_minutes(s.results.get('eval_seconds'))} |")
  lines.append("")
  if tuners:
    lines += ["## KerasTuner runs", "",
              "| run | tuner | trials completed | epochs used / budget | best (held-out "
              "accuracy) |", "|---|---|---|---|---|"]
    for name, source, data in tuners:
      best_index = max(source.values, key=lambda i: (source.values[i], -i))
      trials = len(data["trials"]) if data else "n/a"
      used = f"{data['epochs_used']} / {data['budget_epochs']}" if data else "n/a"
      tuner = data["tuner"] if data else "n/a"
      lines.append(f"| {name} | {tuner} | {trials} | {used} | {best_index} "
                   f"{report_figures.label(space, best_index)} "
                   f"({source.values[best_index]:.2f} %) |")
    lines.append("")

  if truth is not None:
    metrics = [rank.compare(truth.values, e, space) for _, e in estimates]
    ks = sorted({k for m in metrics for k in m["top_k_overlap"]}, key=int)
    lines += ["## Ranking against the ground truth", "",
              f"Ground truth: `{truth.source}` ({len(truth.values)} configurations, column "
              f"`{truth.column}`, percent). Metrics over the configurations present in both "
              "(mixnas_tf.rank); regret = true accuracy of the truly best (of all "
              f"{len(truth.values)}) minus true accuracy of the chosen configuration "
              "(points).", "",
              "| estimate | compared | Kendall tau | Spearman | " +
              " | ".join(f"top-{k}" for k in ks) + " | chosen (true accuracy, true rank) | "
              "regret |", "|---|---|---|---|" + "---|" * len(ks) + "---|---|"]
    for (name, _), m in zip(estimates, metrics):
      c = m["chosen"]
      lines.append(
          f"| {name} | {m['num_compared']} | {_fmt(m['kendall_tau'])} | "
          f"{_fmt(m['spearman'])} | " +
          " | ".join(_fmt(m["top_k_overlap"].get(k), ".2f") for k in ks) +
          f" | {c['index']} {c['stages']} ({c['true_accuracy']:.2f} %, "
          f"{c['true_rank']}/{m['num_truth']}) | {m['regret']:.2f} |")
    best = metrics[0]["best"]
    lines += ["", f"Truly best: {best['index']} {best['stages']} "
              f"({best['true_accuracy']:.2f} %).", "",
              "### Estimated vs true accuracy", "",
              "![estimated vs true](" + report_figures.plot_estimate_vs_truth(
                  space, truth.values, estimates, metrics,
                  os.path.join(out, "estimate_vs_truth.png")) + ")", ""]
  else:
    lines += ["## Estimated accuracy per configuration", ""]
    images = []
    for i, s in enumerate(searches):
      path = os.path.join(out, f"{i}_{_slug(s.name)}_estimated.png")
      plots.estimated_accuracy(s.results["configs"], path, title=f"{s.name}: estimated")
      images.append(os.path.basename(path))
    lines += _image_row([s.name for s in searches], images)

  macs = _macs_by_index(searches, truth_macs)
  panels = ([("ground truth", truth.values)] if truth is not None else []) + estimates
  lines += ["## Accuracy against multiply-accumulates", "",
            "Each panel's Pareto front (red): the configurations that no cheaper-or-equal "
            "configuration beats. MACs per image, forward pass.", "",
            "![accuracy vs MACs](" + report_figures.plot_accuracy_vs_macs(
                space, panels, macs, os.path.join(out, "accuracy_vs_macs.png")) + ")", "",
            "| source | Pareto front, cheapest first: configuration (MMACs, accuracy %) |",
            "|---|---|"]
  for name, values in panels:
    points = {i: (macs[i] / 1e6, v) for i, v in values.items() if i in macs}
    lines.append(f"| {name} | " + ", ".join(
        f"{i} {report_figures.label(space, i)} ({points[i][0]:.1f}, {points[i][1]:.2f})"
        for i in report_figures.pareto_front(points)) + " |")
  lines.append("")

  names = [s.name for s in searches]
  lines += ["## Assignment p(weight set | configuration)", ""]
  images = []
  for i, s in enumerate(searches):
    path = os.path.join(out, f"{i}_{_slug(s.name)}_assignment.png")
    plots.assignment_matrix(s.results["assignment"], [report_figures.label(space, c)
                                                      for c in s.searched],
                            path, title=f"{s.name}: p(weight set | configuration)")
    images.append(os.path.basename(path))
  lines += _image_row(names, images)
  lines += ["## Score matrix and weight-set shares over the epochs", "",
            "Left: each weight set's share of the configurations under the balanced "
            "assignment, and the temperature; right: the weight set each configuration is "
            "assigned to at the end of each epoch. Below: the score matrix W at a few "
            "epochs.", ""]
  lines += _image_row(names, [report_figures.plot_evolution(
      space, s, os.path.join(out, f"{i}_{_slug(s.name)}_evolution.png"))
                              for i, s in enumerate(searches)])
  lines += _image_row(names, [report_figures.plot_score_snapshots(
      space, s, os.path.join(out, f"{i}_{_slug(s.name)}_scores.png"))
                              for i, s in enumerate(searches)])
  curves = report_figures.plot_training_curves(searches, os.path.join(out, "training_curves.png"))
  lines += ["## Training curves", "",
            "Per-epoch means of the search's training loss and accuracy (on the sampled "
            "configurations) and of the validation-batch accuracy that updates W.", "",
            f"![training curves]({curves})" if curves else "(no history)", ""]
  path = os.path.join(out, "report.md")
  workdir_lib.atomic_write_text(path, "\n".join(lines))
  return path
