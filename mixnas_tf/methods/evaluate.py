"""Evaluates (configuration, weight set) pairs, ranks configurations, writes the results.

After a search, every searched configuration is evaluated on the whole search-validation
split under each weight set (`--final_eval=all_pairs`) or only under its assigned one
(`assigned`, K times cheaper). A configuration's estimated accuracy comes from one of
`estimators.ESTIMATORS` (`--estimate`): e.g. its accuracy under the weight set the balanced
assignment gives it (`assigned`, the paper's) or its mean over the sets (`mean`). Finished configurations are appended to
`eval_partial.json`, so an interrupted evaluation resumes where it stopped.
"""

import csv
import io
import os
import time

from absl import logging
import numpy as np

from mixnas_tf import data as data_lib
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.analysis import plots
from mixnas_tf.methods import estimators
from mixnas_tf.methods import mixture
from mixnas_tf.nn import network


def evaluate_pairs(trainer, configs, pairs_for, batches_fn, partial_path=None,
                   progress: bool = True) -> np.ndarray:
  """Accuracy [C, K] of the pairs `pairs_for(c)` lists (NaN elsewhere), resumable.

  Args:
    trainer: a loop.Trainer.
    configs: the configurations (codes), row order of the result.
    pairs_for: config row -> the weight-set indices to evaluate it with.
    batches_fn: () -> an iterable of (images, labels, mask) eval batches.
    partial_path: JSON file where finished rows are recorded (resume).
    progress: print one line per configuration.
  """
  num_models = trainer.model.num_models
  accuracy = np.full((len(configs), num_models), np.nan)
  done = {}
  if partial_path and os.path.exists(partial_path):
    done = workdir_lib.read_json(partial_path)
  for row, config in enumerate(configs):
    key = ",".join(map(str, config))
    if key in done:
      accuracy[row] = [np.nan if a is None else a for a in done[key]]
      continue
    t0 = time.time()
    for m in pairs_for(row):
      accuracy[row, m] = trainer.evaluate(config, m, batches_fn())["accuracy"]
    done[key] = [None if np.isnan(a) else float(a) for a in accuracy[row]]
    if partial_path:
      workdir_lib.atomic_write_json(partial_path, done)
    if progress:
      print(f"  evaluated {row + 1}/{len(configs)} {key}: "
            f"{np.nanmax(accuracy[row]):.4f} ({time.time() - t0:.1f}s)", flush=True)
  return accuracy


def rank_results(space, configs, accuracy, probs, estimate: str, image_size: int,
                 downsample: str, num_classes: int) -> list[dict]:
  """One record per configuration, sorted by estimated accuracy (best first)."""
  values = estimators.estimate(estimate, accuracy, probs)
  models = estimators.chosen_models(estimate, accuracy, probs)
  records = []
  for row, config in enumerate(configs):
    per_model = accuracy[row]
    records.append({
        **config.record(),
        "model": int(models[row]),
        "estimated_accuracy": float(values[row]),
        "accuracy_per_model": [None if np.isnan(a) else float(a) for a in per_model],
        "assignment": [float(p) for p in probs[row]],
        "macs": network.costs(config, image_size, downsample, num_classes)["macs"],
    })
  records.sort(key=lambda r: (-r["estimated_accuracy"], r["index"]))
  for rank, record in enumerate(records, start=1):
    record["rank"] = rank
  return records


def ranking_csv(records: list[dict]) -> str:
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["rank", "index", "stages", "code", "model", "estimated_accuracy", "macs"])
  for r in records:
    writer.writerow([r["rank"], r["index"], spaces.format_stages(r["stages"]), r["code"],
                     r["model"], f"{r['estimated_accuracy']:.6f}", r["macs"]])
  return out.getvalue()


def finish_search(*, cfg, space, configs, dataset, val, trainer, workdir, history,
                  samples) -> dict:
  """Final evaluation of a finished search; writes results.json, ranking.csv and plots."""
  mixture_state = trainer.mixture
  scores = mixture_state.scores.numpy().astype(np.float64)
  temperature = float(mixture_state.temperature.numpy())
  # The final assignment: the last epoch's temperature, balanced on the final scores.
  divisor = mixture.epoch_balance(scores, temperature)
  probs = mixture.assignment_probs(scores, temperature, divisor)
  assigned = mixture.assigned_models(probs)
  if cfg.final_eval == "assigned":
    pairs_for = lambda row: [int(assigned[row])]
  else:
    pairs_for = lambda row: range(cfg.num_models)
  print(f"Evaluating {len(configs)} configurations x "
        f"{1 if cfg.final_eval == 'assigned' else cfg.num_models} weight sets on "
        f"{len(val)} search-validation images.", flush=True)
  t0 = time.time()
  accuracy = evaluate_pairs(
      trainer, configs, pairs_for,
      lambda: data_lib.eval_batches(val, batch_size=cfg.eval_batch_size,
                                    image_size=dataset.image_size),
      partial_path=os.path.join(workdir, "eval_partial.json"), progress=cfg.progress)
  records = rank_results(space, configs, accuracy, probs, cfg.estimate, dataset.image_size,
                         cfg.downsample, dataset.num_classes)
  best = records[0]
  state = workdir_lib.read_json(os.path.join(workdir, "state.json"))
  results = {
      "num_models": cfg.num_models,
      "dataset": cfg.dataset,
      "space": space.name,
      "estimate": cfg.estimate,
      "configs": sorted(records, key=lambda r: r["index"]),
      "best": {k: best[k] for k in ("index", "stages", "code", "model",
                                    "estimated_accuracy", "macs")},
      "ranking": [r["index"] for r in records],
      # Rows of "assignment" and "scores" (and of the history's score matrices) follow
      # the searched order, which "searched" gives as reference indices.
      "searched": [spaces.to_index(space, c) for c in configs],
      "assignment": probs.tolist(),
      "scores": scores.tolist(),
      "temperature": temperature,
      # Traces of this process (after a resume it only evaluated), and the most search
      # steps one training process compiled (= the configurations it met).
      "trace_counts": trainer.trace_counts(),
      "search_step_traces": max(
          [h.get("compile/search_step_traces", 0) for h in history]
          + [trainer.trace_counts()["search_step"]]),
      "compile_seconds": state["extra"].get("compile_seconds"),
      "train_seconds": state.get("elapsed"),
      "eval_seconds": time.time() - t0,
      "search_val_images": len(val),
      "model_steps": trainer.model_steps.numpy().tolist(),
  }
  workdir_lib.atomic_write_text(os.path.join(workdir, "ranking.csv"), ranking_csv(records))
  plots.assignment_matrix(probs, [spaces.format_stages(spaces.to_stages(space, c)) for c in configs],
                          os.path.join(workdir, "assignment.png"))
  plots.estimated_accuracy(results["configs"], os.path.join(workdir, "estimated_accuracy.png"))
  workdir_lib.atomic_write_json(os.path.join(workdir, "results.json"), results)
  logging.info("Best configuration: %d %s, estimated accuracy %.4f (weight set %d).",
               best["index"], spaces.format_stages(best["stages"]), best["estimated_accuracy"],
               best["model"])
  del samples  # Kept in state.json; the report reads them from there.
  return results
