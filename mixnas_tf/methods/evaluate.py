"""Evaluates (configuration, weight set) pairs, ranks configurations, writes the results.

After a search, configurations are evaluated on the whole search-validation split
(`--final_eval`, `FinalEval`): under each weight set (`all_pairs`) or only under the assigned
one (`assigned`, K times cheaper); all of them, or, for large spaces, the `top:N` by score
(W of the assigned set) plus `random:M` others, as the paper did for Food101's 455.
A configuration's estimated accuracy comes from one of `estimators.ESTIMATORS`
(`--estimate`): e.g. its accuracy under the weight set the balanced assignment gives it
(`assigned`, the paper's) or its mean over the sets (`mean`). Finished configurations are
appended to `eval_partial.json`, so an interrupted evaluation resumes where it stopped.
"""

from collections.abc import Callable, Iterable
import csv
import dataclasses
import io
import itertools
import os
import re
import time

from absl import logging
import numpy as np
import tensorflow as tf

from mixnas_tf import data as data_lib
from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.analysis import plots
from mixnas_tf.analysis import sources
from mixnas_tf.methods import estimators
from mixnas_tf.methods import mixture
from mixnas_tf.nn import network
from mixnas_tf.training import pace as pace_lib

PAIRS = ("all_pairs", "assigned")
FINAL_EVAL_HELP = ("all_pairs or assigned (which weight sets), optionally with top:N and/or "
                   "random:M (which configurations: the N best by score plus M others drawn "
                   "at random), comma-separated, e.g. 'top:50,random:50' (assigned sets) or "
                   "'all_pairs,top:50'")


@dataclasses.dataclass(frozen=True)
class FinalEval:
  """What the final evaluation covers.

  Attributes:
    pairs: "all_pairs" (every weight set) or "assigned" (the assigned set only).
    top: evaluate the `top` configurations by score; None: every configuration.
    random: and this many others, drawn at random (seeded).
  """
  pairs: str = "all_pairs"
  top: int | None = None
  random: int = 0

  @property
  def subset(self) -> bool:
    return self.top is not None or self.random > 0


def parse_final_eval(text: str) -> FinalEval:
  """Parses --final_eval; errors.UsageError with the accepted forms."""
  pairs, top, rand = None, None, 0
  tokens = [t.strip() for t in text.split(",")]
  for token in tokens:
    m = re.fullmatch(r"(top|random):(\d+)", token)
    if token in PAIRS and pairs is None:
      pairs = token
    elif m and m.group(1) == "top" and top is None:
      top = int(m.group(2))
    elif m and m.group(1) == "random" and not rand:
      rand = int(m.group(2))
    else:
      raise errors.UsageError(f"--final_eval={text!r}: cannot read {token!r}; accepted: "
                              f"{FINAL_EVAL_HELP}")
  if top is None and not any(t.startswith("random:") for t in tokens):
    return FinalEval(pairs=pairs or "all_pairs")
  if not (top or rand):
    raise errors.UsageError(f"--final_eval={text!r} selects no configuration; accepted: "
                            f"{FINAL_EVAL_HELP}")
  return FinalEval(pairs=pairs or "assigned", top=top or 0, random=rand)


def select_rows(final: FinalEval, scores: np.ndarray, probs: np.ndarray,
                seed: int) -> list[int]:
  """The configurations (rows) a final evaluation covers, in row order.

  The top ones by score W[c, assigned set of c] (ties: lower row), then `random` of the
  rest, drawn with `seed`.
  """
  rows = list(range(scores.shape[0]))
  if not final.subset:
    return rows
  assigned = mixture.assigned_models(probs)
  score = scores[np.arange(len(rows)), assigned]
  top = sorted(rows, key=lambda r: (-score[r], r))[:final.top]
  rest = [r for r in rows if r not in set(top)]
  drawn = np.random.default_rng([seed, 11]).permutation(rest)[:final.random]
  return sorted(top + [int(r) for r in drawn])


def passes(stream: tf.data.Dataset, count: int) -> Callable[[], Iterable]:
  """() -> the next pass: the next `count` batches of the endless `stream`
  (`eval_batches(..., passes=None)`, whose passes are all alike).

  Every pass is read from one iterator, so neither it nor the stream's parallel map and
  prefetch are dropped and rebuilt per pass: dropping a tf.data iterator at each epoch's
  end cost the training loop up to a minute of idle time per epoch (BUILD_NOTES, "stalls
  at 0 % CPU"). Each pass must be read to its end.
  """
  if int(stream.cardinality()) != tf.data.INFINITE_CARDINALITY:
    raise ValueError("passes() needs an endless stream: eval_batches(..., passes=None)")
  iterator = iter(stream)
  return lambda: itertools.islice(iterator, count)


def evaluate_pairs(trainer, configs, pairs_for, batches_fn, partial_path=None,
                   progress: bool = True) -> np.ndarray:
  """Accuracy [C, K] of the pairs `pairs_for(c)` lists (NaN elsewhere), resumable.

  Args:
    trainer: a loop.Trainer.
    configs: the configurations (codes), row order of the result.
    pairs_for: config row -> the weight-set indices to evaluate it with.
    batches_fn: () -> an iterable of (images, labels, mask) eval batches, one pass
      (`passes(stream, count)`: every pass from one iterator).
    partial_path: JSON file where finished rows are recorded (resume).
    progress: print one line per configuration (else log it).
  """
  num_models = trainer.model.num_models
  accuracy = np.full((len(configs), num_models), np.nan)
  done = {}
  if partial_path and os.path.exists(partial_path):
    done = workdir_lib.read_json(partial_path)
  rows = [row for row in range(len(configs)) if len(pairs_for(row))]
  keys = {row: ",".join(map(str, configs[row])) for row in rows}
  # Rows an earlier sitting finished count as done, not towards this sitting's pace.
  finished = sum(keys[row] in done for row in rows)
  pace = pace_lib.Pace(finished, len(rows))
  for row in rows:
    config, key = configs[row], keys[row]
    if key in done:
      accuracy[row] = [np.nan if a is None else a for a in done[key]]
      continue
    t0 = time.time()
    models = list(pairs_for(row))
    if len(models) == num_models > 1:
      # Every weight set in one program and one pass over the data.
      accuracy[row] = [r["accuracy"] for r in trainer.evaluate_all(config, batches_fn())]
    else:
      for m in models:
        accuracy[row, m] = trainer.evaluate(config, m, batches_fn())["accuracy"]
    done[key] = [None if np.isnan(a) else float(a) for a in accuracy[row]]
    if partial_path:
      workdir_lib.atomic_write_json(partial_path, done)
    finished += 1
    label = config.label if hasattr(config, "label") else key
    line = (f"evaluated {finished}/{len(rows)} {label}: "
            + " ".join(f"{a:.4f}" for a in accuracy[row] if not np.isnan(a))
            + f" ({time.time() - t0:.1f}s; {pace.eta(finished)})")
    if progress:
      print("  " + line, flush=True)
    else:
      logging.info(line)
  return accuracy


def rank_results(space, configs, accuracy, probs, scores, estimate: str, image_size: int,
                 downsample: str, num_classes: int) -> list[dict]:
  """One record per configuration: the evaluated ones sorted by estimated accuracy (best
  first, with their `rank`), then those the final evaluation left out (by score, with
  `estimated_accuracy` None)."""
  evaluated = [row for row in range(len(configs)) if not np.all(np.isnan(accuracy[row]))]
  values = np.full(len(configs), np.nan)
  models = mixture.assigned_models(probs)
  if evaluated:
    values[evaluated] = estimators.estimate(estimate, accuracy[evaluated], probs[evaluated])
    models[evaluated] = estimators.chosen_models(estimate, accuracy[evaluated],
                                                 probs[evaluated])
  records = []
  for row, config in enumerate(configs):
    records.append({
        **config.record(),
        "model": int(models[row]),
        "estimated_accuracy": None if np.isnan(values[row]) else float(values[row]),
        "accuracy_per_model": [None if np.isnan(a) else float(a) for a in accuracy[row]],
        "assignment": [float(p) for p in probs[row]],
        "score": float(scores[row, models[row]]),
        "macs": network.costs(config, image_size, downsample, num_classes)["macs"],
    })
  # Estimated configurations first, by estimate (0.0 is an estimate, not a missing one);
  # configurations without one after them, by score.
  records.sort(key=lambda r: (r["estimated_accuracy"] is None,
                              -(r["score"] if r["estimated_accuracy"] is None
                                else r["estimated_accuracy"]), r["index"]))
  for rank, record in enumerate(records, start=1):
    record["rank"] = rank if record["estimated_accuracy"] is not None else None
  return records


def ranking_csv(records: list[dict]) -> str:
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(sources.RANKING_CSV_HEADER)
  for r in records:
    if r["estimated_accuracy"] is None:
      continue  # Not evaluated (--final_eval=top:N,...): results.json lists it.
    writer.writerow([r["rank"], r["index"], spaces.format_stages(r["stages"]), r["code"],
                     r["model"], f"{r['estimated_accuracy']:.6f}", r["macs"]])
  return out.getvalue()


def finish_search(*, cfg, space, configs, dataset, val, trainer, workdir, history,
                  samples, compile_policy: str = "") -> dict:
  """Final evaluation of a finished search; writes results.json, ranking.csv and plots."""
  mixture_state = trainer.mixture
  scores = mixture_state.scores.numpy().astype(np.float64)
  temperature = float(mixture_state.temperature.numpy())
  # The final assignment: the last epoch's temperature, balanced on the final scores.
  divisor = mixture.epoch_balance(scores, temperature)
  probs = mixture.assignment_probs(scores, temperature, divisor)
  assigned = mixture.assigned_models(probs)
  final = parse_final_eval(cfg.final_eval)
  rows = set(select_rows(final, scores, probs, cfg.seed))
  sets = [lambda row: [int(assigned[row])], lambda row: list(range(cfg.num_models))][
      final.pairs == "all_pairs"]
  pairs_for = lambda row: sets(row) if row in rows else []
  print(f"Evaluating {len(rows)} of {len(configs)} configurations x "
        f"{1 if final.pairs == 'assigned' else cfg.num_models} weight sets on "
        f"{len(val)} search-validation images.", flush=True)
  t0 = time.time()
  accuracy = evaluate_pairs(
      trainer, configs, pairs_for,
      passes(data_lib.eval_batches(val, batch_size=cfg.eval_batch_size,
                                   image_size=dataset.image_size, passes=None),
             data_lib.num_eval_batches(val, cfg.eval_batch_size)),
      partial_path=os.path.join(workdir, "eval_partial.json"), progress=cfg.progress)
  records = rank_results(space, configs, accuracy, probs, scores, cfg.estimate,
                         dataset.image_size, cfg.downsample, dataset.num_classes)
  best = records[0]
  # Did the sets specialise? Only measurable with every pair of several sets evaluated.
  special = (mixture.specialisation(accuracy, probs)
             if cfg.num_models > 1 and not np.isnan(accuracy).any() else None)
  state = workdir_lib.read_json(os.path.join(workdir, "state.json"))
  results = {
      "num_models": cfg.num_models,
      "dataset": cfg.dataset,
      "space": space.name,
      "estimate": cfg.estimate,
      "configs": sorted(records, key=lambda r: r["index"]),
      "best": {k: best[k] for k in ("index", "stages", "code", "model",
                                    "estimated_accuracy", "macs")},
      "ranking": [r["index"] for r in records if r["rank"] is not None],
      "evaluated_configs": len(rows),
      # Rows of "assignment" and "scores" (and of the history's score matrices) follow
      # the searched order, which "searched" gives as reference indices.
      "searched": [spaces.to_index(space, c) for c in configs],
      "assignment": probs.tolist(),
      "specialisation": special,
      "scores": scores.tolist(),
      "temperature": temperature,
      # Traces of this process (after a resume it only evaluated), and the most search
      # steps one training process compiled (= the configurations it met).
      "trace_counts": trainer.trace_counts(),
      "search_step_traces": max(
          [h.get("compile/search_step_traces", 0) for h in history]
          + [trainer.trace_counts()["search_step"]]),
      "compile_seconds": state["extra"].get("compile_seconds"),
      "compile_policy": compile_policy,
      "programs": trainer.program_counts(),
      # From the start of the run (data loading, building, first compilation) to its
      # first finished step, and the share of training time spent compiling.
      "time_to_first_step_seconds": state["extra"].get("first_step_seconds"),
      "compile_share": (state["extra"].get("compile_seconds") or 0.0)
                       / max(state.get("elapsed") or 0.0, 1e-9),
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
  if special:
    logging.info("Specialisation of the weight sets: a configuration is %+.2f points (SE "
                 "%.2f) better under its own set than under the others; its own set is its "
                 "best for %.0f%% (%.0f%% by chance); mean max p(m|c) %.2f.",
                 100 * special["own_minus_others"], 100 * special["own_minus_others_se"],
                 100 * special["own_is_best"], 100 / cfg.num_models, special["hardness"])
  del samples  # Kept in state.json; the report reads them from there.
  return results
