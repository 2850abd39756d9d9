"""Fault injection: a search killed with SIGKILL at random moments resumes to the results
of an uninterrupted run (experiments/fault_injection.py, two trials here)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_killed_searches_resume_to_the_uninterrupted_results(tmp_path):
  out = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "fault_injection.py"), "--kills=2",
       f"--workdir={tmp_path}", "--seed=1"],
      capture_output=True, text=True, timeout=1500, cwd=ROOT,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  assert "all 2 trials match the uninterrupted run" in out.stdout
