"""The timing harness of benchmarks/train_throughput.py (and corpus_scale.py): each contender
in a process of its own, and the CPU that an idle contender takes while another is timed."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position


def _busy(seconds: float) -> None:
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def build_busy(seconds: float):
  """A Contender's build: `measure()` spins one core for `seconds` of CPU time."""
  return lambda: train_throughput.seconds(lambda: _busy(seconds)), {"pid": os.getpid()}


def test_process_cpu_seconds_counts_a_busy_process_and_not_a_sleeping_one():
  child = subprocess.Popen([sys.executable, "-c",
                            "import time\nend = time.process_time() + 0.5\n"
                            "while time.process_time() < end: pass\ntime.sleep(30)"])
  try:
    start = time.perf_counter()
    while train_throughput.process_cpu_seconds(child.pid) < 0.5:
      assert time.perf_counter() - start < 20, "the child's busy half second never showed"
      time.sleep(0.05)
    asleep = train_throughput.process_cpu_seconds(child.pid)
    time.sleep(0.5)
    assert train_throughput.process_cpu_seconds(child.pid) - asleep < 0.05
  finally:
    child.kill()
    child.wait()
  assert train_throughput.process_cpu_seconds(child.pid) != train_throughput.process_cpu_seconds(
      child.pid)  # nan: no such process


def test_a_contender_times_its_run_and_sees_the_idle_one_idle():
  timed, idle = (train_throughput.Contender(build_busy, seconds=0.3) for _ in range(2))
  try:
    assert timed.info["pid"] == timed.pid != idle.pid
    wall, cpu, _, idle_share = timed.measure([timed, idle])
    assert 0.25 < cpu < 1.0 and wall >= 0.9 * cpu
    assert idle_share < 0.02
  finally:
    for contender in (timed, idle):
      contender.close()


def build_sleepy(seconds: float):
  """A Contender's build: `measure()` sleeps `seconds`."""
  return lambda: train_throughput.seconds(lambda: time.sleep(seconds)), {}


# Slow (spawns contenders): a benchmark's own tool; test_a_contender_times_its_run covers
# the contenders in the default run.
@pytest.mark.slow
def test_a_contender_over_its_time_limit_is_stopped_and_named():
  """Its step sleeps for a minute, its limit is half a second: interleave stops it in the
  first round, names it, and goes on without it."""
  busy = train_throughput.Contender(build_busy, seconds=0.05)  # also the matmul rate's stand-in
  slow = train_throughput.Contender(build_sleepy, timeout=0.5, seconds=60)
  contenders = {"busy": busy, "slow": slow}
  timed_out = {}
  try:
    start = time.perf_counter()
    times, rates = train_throughput.interleave(contenders, busy, 2, timed_out=timed_out)
    assert time.perf_counter() - start < 20
  finally:
    for contender in (busy, slow):
      contender.close()
  assert timed_out == {"slow": "round 1"}
  assert list(contenders) == ["busy"] and not slow.alive
  assert list(times) == ["busy"] and len(times["busy"]) == 2 and len(rates) == 2


def test_the_table_names_a_contender_that_timed_out(capsys):
  train_throughput.print_table({
      "samtone_jax": {"wall_seconds": 2.0, "examples_per_second": 32.0},
      "sentence_transformers": {"timed_out": "round 1", "timeout_s": 600.0}})
  lines = capsys.readouterr().out.splitlines()
  assert lines[1].split() == ["samtone_jax", "2.000", "32.00"]
  assert lines[2].split()[0] == "sentence_transformers"
  assert "timed out in round 1" in lines[2] and "600 s" in lines[2]
