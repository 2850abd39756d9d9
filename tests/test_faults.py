"""Fault injection: a search killed with SIGKILL at random moments resumes to the results
of an uninterrupted run (experiments/fault_injection.py, two trials here)."""

import json
import os
import pathlib
import resource
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_killed_searches_resume_to_the_uninterrupted_results(tmp_path):
  out = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "fault_injection.py"), "--kills=2",
       f"--workdir={tmp_path}", "--seed=1"],
      capture_output=True, text=True, timeout=1500, cwd=ROOT,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  assert "all 2 trials match the uninterrupted run" in out.stdout


def _search_cfg(folder, **overrides):
  from mixnas_tf.methods import search  # pylint: disable=g-import-not-at-top
  base = dict(dataset=f"folder:{folder}", configs="4,3,3;1,1,8", num_models=2, epochs=2,
              batch_size=16, eval_batch_size=32, progress=False, log_every=2,
              jit_compile=False, seed=3, deterministic=True)
  base.update(overrides)
  return search.SearchConfig(**base)


def _json(path):
  with open(path) as f:
    return json.load(f)


def test_a_diverged_search_stops_in_one_line_and_writes_no_results(tiny_folder, tmp_path):
  from mixnas_tf import errors  # pylint: disable=g-import-not-at-top
  from mixnas_tf.methods import search  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  with pytest.raises(errors.RunError, match=r"training diverged: loss became non-finite in "
                     r"epoch 1 between steps \d+ and \d+"):
    # No warm-up: the first epoch's first steps already run at the diverging rate.
    search.run_search(_search_cfg(tiny_folder, learning_rate=1e38, warmup_epochs=0),
                      str(workdir))
  assert not (workdir / "results.json").exists()
  assert not (workdir / "state.json").exists()  # Nothing diverged was checkpointed.


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_good_one(tiny_folder, tmp_path,
                                                                      monkeypatch):
  """Disk full at the second epoch's checkpoint: one RunError, the first epoch's checkpoint
  still named by state.json and complete, and the same run resumes to the results of one
  that was never interrupted."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from mixnas_tf import errors  # pylint: disable=g-import-not-at-top
  from mixnas_tf.methods import search  # pylint: disable=g-import-not-at-top
  cfg = _search_cfg(tiny_folder)
  reference = search.run_search(cfg, str(tmp_path / "straight"))

  # What tf.train.CheckpointManager.save writes through.
  write = tf.train.Checkpoint._write  # pylint: disable=protected-access
  calls = []

  def failing_write(self, path, *args, **kwargs):
    calls.append(path)
    if len(calls) == 2:
      write(self, path, *args, **kwargs)  # A partial write, then the disk is full.
      raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    return write(self, path, *args, **kwargs)

  monkeypatch.setattr(tf.train.Checkpoint, "_write", failing_write)
  workdir = tmp_path / "run"
  with pytest.raises(errors.RunError, match="could not write checkpoint .*ckpt-2 .*No "
                     "space left on device.*the last good checkpoint is intact"):
    search.run_search(cfg, str(workdir))
  state = _json(workdir / "state.json")
  assert state["checkpoint"] == "ckpt-1"
  assert sorted({f.split(".")[0] for f in os.listdir(workdir / "checkpoints")
                 if f.startswith("ckpt-")}) == ["ckpt-1"]
  assert not (workdir / "results.json").exists()
  monkeypatch.setattr(tf.train.Checkpoint, "_write", write)
  results = search.run_search(cfg, str(workdir))
  np.testing.assert_array_equal(reference["scores"], results["scores"])
  assert reference["best"] == results["best"]


def test_a_file_size_limit_gives_one_line_and_the_run_resumes(tiny_folder, tmp_path):
  """A real write failure (RLIMIT_FSIZE, like a full disk): `error:` line, exit 1, no
  traceback; without the limit the same command completes."""
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "mixnas_tf.train", f"--workdir={workdir}",
         f"--dataset=folder:{tiny_folder}", "--configs=4,3,3;1,1,8", "--num_models=2",
         "--epochs=1", "--batch_size=16", "--nojit_compile", "--noprogress"]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

  def limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                       preexec_fn=limit)
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert lines[-1].startswith("error: could not write checkpoint"), lines[-1]
  assert "File too large" in lines[-1]
  assert not (workdir / "results.json").exists()
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  assert (workdir / "results.json").exists()
