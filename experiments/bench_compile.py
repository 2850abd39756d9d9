r"""Compile time of a search's programs: sequential against concurrent, and the cache.

  python experiments/bench_compile.py --out=experiments/results/bench_compile.json

What the search does before its first step (methods/search.py): trace every
configuration's search and evaluation steps in a fixed order, then compile them all with
`Trainer.compile_ahead`, `--compile_threads` at a time. This measures that, for
`--configs` (default: 12 of the 36 ResNet20 configurations) at K = `--num_models`:
  1. wall time of the compilation with 1 thread (sequential) and with each of `--threads`,
     each in a fresh process (no in-memory cache), interleaved over `--repeats`, medians;
  2. the persistent XLA cache: a run with seed 0 fills an empty `--tf_xla_persistent_
     cache_directory`, a second run with seed 1 reads it; the second run's compile time
     and the cache entries it added (0 = every program was a cache hit) are reported,
     with the time of lowering the programs to HLO alone, which TF does before it looks a
     program up in the cache.
Writes JSON and prints a table. Runs unchanged on a GPU host (the child processes use
whatever device TF finds).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from mixnas_tf import workdir as workdir_lib

flags.DEFINE_string("out", "experiments/results/bench_compile.json", "JSON output.")
flags.DEFINE_string("configs", "", "Configurations (spaces.parse_configs); default: every "
                    "third of the 36, i.e. 12.")
flags.DEFINE_integer("num_models", 4, "K.")
flags.DEFINE_list("threads", ["2"], "Concurrent compile threads to compare with 1.")
flags.DEFINE_integer("repeats", 3, "Interleaved repeats; medians are reported.")
flags.DEFINE_integer("batch_size", 128, "Search batch size.")
flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
flags.DEFINE_bool("cache", True, "Also measure the persistent cache (part 2).")
flags.DEFINE_bool("child", False, "Internal: one measurement in this process.")
flags.DEFINE_integer("child_threads", 1, "Internal.")
flags.DEFINE_integer("child_seed", 0, "Internal.")
flags.DEFINE_bool("child_lower", False, "Internal: time the lowering to HLO only.")
FLAGS = flags.FLAGS


def child() -> dict:
  """Builds a search's trainer and times tracing and compile_ahead; returns a dict."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # pylint: disable=g-import-not-at-top
  from mixnas_tf import spaces
  from mixnas_tf.methods import search
  from mixnas_tf.nn import network
  from mixnas_tf.training import runtime
  from mixnas_tf.training import trainer as trainer_lib
  # pylint: enable=g-import-not-at-top
  space = spaces.get_space("resnet20")
  configs = (spaces.parse_configs(space, FLAGS.configs) if FLAGS.configs
             else spaces.parse_configs(space, "all")[::3])
  cfg = search.SearchConfig(num_models=FLAGS.num_models, batch_size=FLAGS.batch_size,
                            eval_batch_size=FLAGS.eval_batch_size, final_eval="all_pairs",
                            warmup_epochs=0,  # as when its results were measured
                            seed=FLAGS.child_seed)
  runtime.set_seeds(cfg.seed)
  model = network.SwitchableResNet(configs=configs, num_models=cfg.num_models,
                                   batchnorm="batch_stats")
  trainer = trainer_lib.Trainer(
      model, cfg.optim(steps_per_epoch=100), total_steps=1000, jit_compile=True,
      mixture=trainer_lib.MixtureState(len(configs), cfg.num_models, cfg.seed))
  cpu0, t0 = time.process_time(), time.perf_counter()
  jobs = search.compile_jobs(trainer, cfg, configs, 32)
  for programs, config, specs in jobs:
    programs.trace(config, *specs)
  traced = time.perf_counter() - t0
  if FLAGS.child_lower:
    # Only the lowering to XLA's HLO, which TF does before it looks the program up in
    # the persistent cache: what a cache hit still pays.
    t1 = time.perf_counter()
    for programs, config, specs in jobs:
      programs._program(config).experimental_get_compiler_ir(*specs)(stage="hlo")  # pylint: disable=protected-access
    return {"configs": len(configs), "programs": len(jobs), "trace_s": traced,
            "lower_s": time.perf_counter() - t1}
  t1 = time.perf_counter()
  trainer.compile_ahead(jobs, FLAGS.child_threads)
  return {"configs": len(configs), "programs": len(jobs), "threads": FLAGS.child_threads,
          "trace_s": traced, "compile_s": time.perf_counter() - t1,
          "cpu_s": time.process_time() - cpu0}


def measure(threads: int, seed: int = 0, cache_dir: str | None = None,
            lower: bool = False) -> dict:
  env = dict(os.environ)
  if cache_dir:
    env["TF_XLA_FLAGS"] = (env.get("TF_XLA_FLAGS", "") +
                           f" --tf_xla_persistent_cache_directory={cache_dir}").strip()
  argv = [sys.executable, os.path.abspath(__file__), "--child", f"--child_threads={threads}",
          f"--child_seed={seed}", f"--num_models={FLAGS.num_models}",
          f"--child_lower={str(lower).lower()}",
          f"--batch_size={FLAGS.batch_size}", f"--eval_batch_size={FLAGS.eval_batch_size}"]
  if FLAGS.configs:
    argv.append(f"--configs={FLAGS.configs}")
  out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
  if out.returncode or not lines:
    raise SystemExit(f"a measurement failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
  return json.loads(lines[-1])


def _entries(directory: str) -> int:
  return sum(len(files) for _, _, files in os.walk(directory))


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps(child()), flush=True)
    return
  modes = [1] + [int(t) for t in FLAGS.threads if int(t) != 1]
  runs = {t: [] for t in modes}
  for r in range(FLAGS.repeats):
    for t in modes:
      runs[t].append(measure(t))
      m = runs[t][-1]
      print(f"repeat {r + 1}, {t} thread(s): trace {m['trace_s']:.1f} s, compile "
            f"{m['compile_s']:.1f} s, process CPU {m['cpu_s']:.0f} s", flush=True)
  medians = {t: statistics.median(m["compile_s"] for m in runs[t]) for t in modes}
  first = runs[1][0]
  results = {"configs": first["configs"], "programs": first["programs"],
             "num_models": FLAGS.num_models, "cpu_count": os.cpu_count(),
             "compile_s_median": {str(t): medians[t] for t in modes},
             "speedup_over_sequential": {str(t): medians[1] / medians[t] for t in modes},
             "runs": {str(t): runs[t] for t in modes}}
  print()
  print(f"{first['configs']} configurations, {first['programs']} programs (search + "
        f"evaluation steps), K={FLAGS.num_models}, {os.cpu_count()} cores")
  print(f"{'threads':>8}{'compile s (median)':>20}{'x sequential':>14}")
  for t in modes:
    print(f"{t:>8}{medians[t]:>20.1f}{medians[1] / medians[t]:>14.2f}")
  if FLAGS.cache:
    with tempfile.TemporaryDirectory() as cache_dir:
      fill = measure(max(modes), seed=0, cache_dir=cache_dir)
      filled = _entries(cache_dir)
      hit = measure(max(modes), seed=1, cache_dir=cache_dir)
      added = _entries(cache_dir) - filled
    lowered = measure(1, lower=True)
    results["cache"] = {"seed0": fill, "seed1": hit, "entries_after_seed0": filled,
                        "entries_added_by_seed1": added, "lowering_only": lowered}
    print(f"persistent cache: seed 0 compiled in {fill['compile_s']:.1f} s and wrote {filled} "
          f"entries; seed 1 compiled in {hit['compile_s']:.1f} s and added {added}; "
          f"lowering the {lowered['programs']} programs to HLO alone takes "
          f"{lowered['lower_s']:.1f} s")
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  workdir_lib.atomic_write_json(FLAGS.out, results)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
