r"""Feeds every command bad input and tabulates what a user sees.

  python experiments/bad_inputs.py --out=experiments/results/bad_inputs.md

Each case runs one command line (in a scratch directory, on a tiny image folder made
here) and records its exit status and the last line of its stderr. A case passes when the
status is the expected one (2 for bad input) and stderr is that one `error:` line with no
traceback. Exits 1 if any case fails.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

flags.DEFINE_string("out", None, "Markdown table to write.")
FLAGS = flags.FLAGS


def _folder(root: pathlib.Path) -> pathlib.Path:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c, name in enumerate(("a", "b", "c")):
    (root / "train" / name).mkdir(parents=True)
    for i in range(12):
      image = rng.integers(0, 120, (16, 16, 3))
      image[..., c] += 120
      Image.fromarray(image.astype(np.uint8)).save(root / "train" / name / f"{i}.png")
  return root


def cases(d: pathlib.Path, folder: pathlib.Path) -> list[tuple[str, list[str]]]:
  data = f"--dataset=folder:{folder}"
  w = f"--workdir={d / 'w'}"
  quick = ["--epochs=1", "--batch_size=8", "--nojit_compile", "--noprogress"]
  a_file = d / "a_file"
  a_file.write_text("x")
  train = [
      ("no --workdir", []),
      ("positional argument", [w, "extra"]),
      ("unknown flag", [w, "--no_such_flag=1"]),
      ("unknown dataset", [w, "--dataset=imagenet"]),
      ("missing folder", [w, "--dataset=folder:/nonexistent"]),
      ("folder without train/", [w, f"--dataset=folder:{d}"]),
      ("unknown space", [w, data, "--space=resnet1000"]),
      ("stages that do not sum", [w, data, "--configs=4,3,4"]),
      ("reference number out of range", [w, data, "--configs=99"]),
      ("empty --configs", [w, data, "--configs="]),
      ("--configs of separators", [w, data, "--configs=;;"]),
      ("ResNet50 stages counted with the stem", [w, data, "--space=resnet50",
                                                 "--configs=4,4,6,3"]),
      ("--num_models=0", [w, data, "--num_models=0"]),
      ("more weight sets than configurations", [w, data, "--configs=4,3,3", "--num_models=2"]),
      ("--epochs=0", [w, data, "--epochs=0"]),
      ("--shared_epochs >= --epochs", [w, data, "--epochs=2", "--shared_epochs=2"]),
      ("--val_fraction=1", [w, data, "--val_fraction=1.0"]),
      ("batch larger than the split", [w, data, "--batch_size=512", *quick[2:]]),
      ("unknown --downsample", [w, data, "--downsample=stride3"]),
      ("diffstride in a search", [w, data, "--downsample=diffstride"]),
      ("unknown --estimate", [w, data, "--estimate=median"]),
      ("--estimate=mean without all pairs", [w, data, "--estimate=mean",
                                             "--final_eval=assigned"]),
      ("bad --final_eval", [w, data, "--final_eval=top:x"]),
      ("--final_eval selecting nothing", [w, data, "--final_eval=top:0"]),
      ("unknown --precision", [w, data, "--precision=fp8"]),
      ("--deterministic with XLA max-pool", [w, data, "--deterministic"]),
      ("--max_live_programs=0", [w, data, "--max_live_programs=0"]),
      ("work directory is a file", [f"--workdir={a_file}", data, "--configs=4,3,3;1,1,8",
                                    "--num_models=2", *quick]),
  ]
  out = [(f"train: {name}", ["mixnas_tf.train", *args]) for name, args in train]
  out += [
      ("retrain: --config and --from_search",
       ["mixnas_tf.retrain", w, data, "--config=4,3,3", f"--from_search={d}"]),
      ("retrain: --from_search of no search", ["mixnas_tf.retrain", w, f"--from_search={d}"]),
      ("retrain: bad --schedule", ["mixnas_tf.retrain", w, data, "--schedule=linear"]),
      ("retrain: bad --step_boundaries", ["mixnas_tf.retrain", w, data,
                                          "--step_boundaries=a,b"]),
      ("exhaustive: bad --shard", ["mixnas_tf.exhaustive", w, data, "--shard=3/2"]),
      ("exhaustive: merge without --out", ["mixnas_tf.exhaustive", "merge", str(d)]),
      ("tune: unknown --tuner", ["mixnas_tf.tune", w, data, "--budget_epochs=6",
                                 "--tuner=nope"]),
      ("tune: no --budget_epochs", ["mixnas_tf.tune", w, data]),
      ("rank: missing truth", ["mixnas_tf.rank", "--truth=/nonexistent.csv",
                               "--estimate=/nonexistent.csv"]),
      ("rank: unknown column", ["mixnas_tf.rank", f"--truth={d / 'x.csv:nope'}",
                                f"--estimate={d / 'x.csv'}"]),
      ("report: no search", ["mixnas_tf.report", f"--search={d}", f"--out={d / 'r'}"]),
      ("export: not a run", ["mixnas_tf.export", f"--workdir={d}"]),
      ("widths: --width_mult<1", ["mixnas_tf.widths", w, data, "--width_mult=0.5"]),
      ("widths: --flops_ratio=0", ["mixnas_tf.widths", w, data, "--flops_ratio=0"]),
      ("widths: too many --search_epochs", ["mixnas_tf.widths", w, data, "--epochs=2",
                                            "--search_epochs=2"]),
      ("diffstride_train: --stride_regularizer<0",
       ["mixnas_tf.diffstride_train", w, data, "--stride_regularizer=-1"]),
  ]
  (d / "x.csv").write_text("architecture,baseline_avg\n1,90\n2,91\n")
  return out


def main(argv):
  del argv
  rows, failed = [], 0
  with tempfile.TemporaryDirectory() as tmp:
    d = pathlib.Path(tmp)
    folder = _folder(d / "data")
    for name, args in cases(d, folder):
      out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                           timeout=600, cwd=tmp, env={**os.environ})
      lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
      last = lines[-1] if lines else ""
      ok = (out.returncode == 2 and last.startswith("error: ") and
            "Traceback" not in out.stderr)
      failed += not ok
      shown = last.replace(tmp, "TMP").replace("|", "\\|")
      rows.append(f"| {name} | {out.returncode} | {'yes' if ok else '**no**'} | {shown} |")
      print(rows[-1], flush=True)
  table = ("| input | exit | one line, status 2 | last line of stderr |\n"
           "|---|---|---|---|\n" + "\n".join(rows) + "\n")
  if FLAGS.out:
    pathlib.Path(FLAGS.out).write_text(table)
  print(f"{len(rows) - failed} of {len(rows)} cases give one error line and status 2")
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
