"""Data parallelism with tf.distribute (`--strategy`): a mirrored run on two logical CPU
devices computes the one-device run of the same global batch (distribute.py).

The two-device runs happen in a subprocess (tests/distribute_check.py): logical devices
must be configured before TensorFlow initialises its devices, which this process has done.

Tolerances: the search's decisions (sampled weight sets, scores, assignment, final
accuracies) and the evaluation accuracy are the same; losses agree to 1e-4 relative. The
weights agree to rounding amplified by training: a few steps of backpropagation through
batch normalisation of a freshly initialised network turn the 1e-7 differences of
another summation order into up to ~1e-2 relative in a few small tensors (a BatchNorm
beta started at 0), 1e-3 in the median tensor.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from mixnas_tf import errors
from mixnas_tf.training import distribute
from mixnas_tf.training import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _start(modes, folder, workdir, env=None):
  return subprocess.Popen(
      [sys.executable, str(ROOT / "tests" / "distribute_check.py"), modes, str(folder),
       str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _result(process):
  try:
    stdout, stderr = process.communicate(timeout=900)
  except subprocess.TimeoutExpired:
    process.kill()
    stdout, stderr = process.communicate()
  lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
  assert process.returncode == 0 and lines, stderr[-3000:]
  return json.loads(lines[-1][len("RESULT "):])


def _check(modes, folder, workdir, env=None):
  return _result(_start(modes, folder, workdir, env))


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.fixture(scope="module")
def mirrored(tiny_folder, tmp_path_factory):
  return _check("none,mirrored", tiny_folder, tmp_path_factory.mktemp("mirrored"))


def _relative(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))


def _compare_variables(one, many, prefix, max_rel, median_rel):
  names = [k for k in one if k.startswith(prefix) and np.size(one[k])]
  assert names and set(one) == set(many)
  errors_ = [_relative(one[k], many[k]) for k in names]
  assert max(errors_) < max_rel, max(zip(errors_, names))
  assert float(np.median(errors_)) < median_rel


def test_mirrored_search_matches_one_device(mirrored):
  assert mirrored["mirrored_replicas"] == 2 and mirrored["none_replicas"] == 1
  one, two = mirrored["none"]["search"], mirrored["mirrored"]["search"]
  a, b = one["results"], two["results"]
  assert a["model_steps"] == b["model_steps"]  # The same sampled weight sets.
  np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
  np.testing.assert_allclose(a["assignment"], b["assignment"], atol=1e-6)
  assert a["best"]["index"] == b["best"]["index"]
  for x, y in zip(a["configs"], b["configs"]):
    assert x["index"] == y["index"] and x["model"] == y["model"]
    np.testing.assert_allclose(x["accuracy_per_model"], y["accuracy_per_model"], atol=1e-6)
  _compare_variables(one["variables"], two["variables"], "trainer/optimizer/_variables",
                     max_rel=2e-2, median_rel=1e-3)


def test_mirrored_standalone_matches_one_device(mirrored):
  """Retraining and the exhaustive ground truth train through this run (standard
  BatchNorm: moving statistics from the synchronized global-batch statistics)."""
  one, two = mirrored["none"]["standalone"], mirrored["mirrored"]["standalone"]
  a, b = one["metrics"], two["metrics"]
  assert a["test_accuracy"] == b["test_accuracy"] and a["test_images"] == b["test_images"]
  assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-3)
  assert b["train_accuracy_last_epoch"] == a["train_accuracy_last_epoch"]
  _compare_variables(one["variables"], two["variables"], "trainer/optimizer/_variables",
                     max_rel=2e-2, median_rel=1e-3)
  _compare_variables(one["variables"], two["variables"], "trainer/model/",
                     max_rel=1e-3, median_rel=1e-4)  # Moving statistics.


def test_mirrored_replicas_hold_identical_copies(mirrored):
  one, two = mirrored["none_trainer"], mirrored["mirrored_trainer"]
  assert two["identical"]  # Every variable's and momentum's replica copies, bit for bit.
  np.testing.assert_allclose(one["losses"], two["losses"], rtol=1e-5)
  assert max(_relative(x, y) for x, y in zip(one["weights"], two["weights"])) < 1e-4


def test_multi_worker_matches_one_device(mirrored, tiny_folder, tmp_path):
  """Two worker processes on 127.0.0.1 (TF_CONFIG, one CPU device each): the same
  numbers as the one-device run, and the workers end with the same variables."""
  ports = _free_ports(2)
  for i in range(2):
    (tmp_path / f"tmp{i}").mkdir()
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  workers = [_start("multi_worker", tiny_folder, tmp_path / "runs", env={
      "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
      "TMPDIR": str(tmp_path / f"tmp{i}")}) for i in range(2)]
  chief, other = [_result(w) for w in workers]
  assert chief["multi_worker_chief"] and not other["multi_worker_chief"]
  assert chief["multi_worker_replicas"] == 2
  # Only worker 0 wrote the work directory; worker 1 wrote under its temporary directory.
  assert (tmp_path / "runs" / "0_multi_worker" / "search" / "results.json").exists()
  assert list((tmp_path / "tmp1" / "mixnas_tf_workers").iterdir())
  for part in ("search", "standalone"):
    # Bit for bit.
    assert chief["multi_worker"][part]["variables"] == other["multi_worker"][part]["variables"]
  one, many = mirrored["none"]["search"], chief["multi_worker"]["search"]
  assert one["results"]["model_steps"] == many["results"]["model_steps"]
  np.testing.assert_allclose(one["results"]["scores"], many["results"]["scores"], atol=1e-6)
  _compare_variables(one["variables"], many["variables"], "trainer/optimizer/_variables",
                     max_rel=2e-2, median_rel=1e-3)
  one, many = mirrored["none"]["standalone"], chief["multi_worker"]["standalone"]
  assert one["metrics"]["test_accuracy"] == many["metrics"]["test_accuracy"]
  _compare_variables(one["variables"], many["variables"], "trainer/model/",
                     max_rel=1e-3, median_rel=1e-4)


def test_batch_must_split_across_replicas():
  three = types.SimpleNamespace(num_replicas_in_sync=3)
  distribute.check_batch(three, batch_size=48, eval_batch_size=3)
  distribute.check_batch(None, batch_size=7)
  with pytest.raises(errors.UsageError, match="--eval_batch_size=32 does not split across "
                     "the 3 replicas.*multiple of 3"):
    distribute.check_batch(three, batch_size=48, eval_batch_size=32)


def test_strategy_choices_and_settings(monkeypatch):
  assert distribute.make("none") is None
  with pytest.raises(errors.UsageError, match="--strategy must be one of none, mirrored, "
                     "multi_worker"):
    distribute.make("tpu")
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(errors.UsageError, match="needs TF_CONFIG"):
    distribute.make("multi_worker")
  assert distribute.is_chief(None)
  assert distribute.run_workdir(None, "/x/run") == "/x/run"
  assert runtime.compile_policy(True, 3, 96, "mirrored") == (False, (
      "graph mode: --strategy=mirrored all-reduces through tf.distribute, which an "
      "XLA-compiled replica step cannot contain (distribute.py)"))
