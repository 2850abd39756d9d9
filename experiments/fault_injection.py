r"""Kills a search with SIGKILL at random moments, resumes it, and checks the results.

  python experiments/fault_injection.py --kills=10 --workdir=runs/faults

A small deterministic search (`--deterministic`, graph mode, an image folder made here) is
first run uninterrupted. Then, for each of `--kills` trials, the same search is started
in a fresh work directory and killed with SIGKILL after a random delay (anywhere from data
loading to the final evaluation and the results' writing), restarted, possibly killed
again, and finally run to completion. Every completed run must give results.json equal to
the uninterrupted run's (configurations, estimates, scores, ranking), and no result file of any
work directory may be half-written (every JSON parses).
Prints one line per trial and exits 1 on the first failure. tests/test_faults.py runs two
trials of it.
"""

import json
import pathlib
import random
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

flags.DEFINE_string("workdir", "runs/faults", "Where the runs go.")
flags.DEFINE_integer("kills", 10, "Trials (each killed at one to three random moments).")
flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
FLAGS = flags.FLAGS

COMPARED = ("configs", "best", "ranking", "scores", "assignment", "model_steps")


def make_folder(root: pathlib.Path) -> pathlib.Path:
  """3 classes x 24 PNGs of 16 px, tinted by class (learnable), written once."""
  if (root / "train").is_dir():
    return root
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c, name in enumerate(("a", "b", "c")):
    folder = root / "train" / name
    folder.mkdir(parents=True)
    for i in range(24):
      image = rng.integers(0, 120, (16, 16, 3))
      image[..., c] += 120
      Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:04d}.png")
  return root


def command(folder: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "mixnas_tf.train", f"--workdir={workdir}",
          f"--dataset=folder:{folder}", "--configs=4,3,3;5,3,2;1,1,8", "--num_models=2",
          "--epochs=3", "--batch_size=8", "--eval_batch_size=8", "--nojit_compile",
          "--deterministic", "--noprogress", "--log_every=1", "--seed=3"]


def check_files(workdir: pathlib.Path) -> None:
  """Every result file parses. (A kill during an atomic write may leave its hidden
  temporary file behind; the file it was to replace is whole.)"""
  for path in workdir.rglob("*.json"):
    if not path.name.startswith("."):
      json.loads(path.read_text())


def trial(folder, reference, workdir: pathlib.Path, rng: random.Random, full_time: float):
  runs = 0
  for _ in range(rng.randint(1, 3)):
    proc = subprocess.Popen(command(folder, workdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.1, 1.1) * full_time)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
    proc.wait()
    runs += 1
    check_files(workdir)
  final = subprocess.run(command(folder, workdir), capture_output=True, text=True,
                         timeout=900)
  if final.returncode != 0:
    raise AssertionError(f"the resumed run failed: {final.stderr[-1500:]}")
  check_files(workdir)
  results = json.loads((workdir / "results.json").read_text())
  for key in COMPARED:
    if results[key] != reference[key]:
      raise AssertionError(f"{workdir}: {key} differs from the uninterrupted run")
  return runs


def main(argv):
  del argv
  root = pathlib.Path(FLAGS.workdir).resolve()
  folder = make_folder(root / "data")
  reference_dir = root / "reference"
  start = time.time()
  if not (reference_dir / "results.json").exists():
    subprocess.run(command(folder, reference_dir), check=True, capture_output=True)
  full_time = max(time.time() - start, 20.0)
  reference = json.loads((reference_dir / "results.json").read_text())
  rng = random.Random(FLAGS.seed)
  for k in range(FLAGS.kills):
    workdir = root / f"trial_{k}"
    if (workdir / "results.json").exists():
      continue
    runs = trial(folder, reference, workdir, rng, full_time)
    print(f"trial {k}: killed {runs} time(s), resumed to the uninterrupted results", flush=True)
  print(f"all {FLAGS.kills} trials match the uninterrupted run")


if __name__ == "__main__":
  app.run(main)
