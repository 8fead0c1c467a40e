"""Training on 2 processes on 127.0.0.1 (gloo CPU collectives, 2 simulated devices each),
launched as README's "Training on several hosts" says, equals training on 1 process with 4
devices on the same global batches; a killed process ends its peer's run with an error
within a bounded time."""

import json
import re
import signal
import time

import jax
import numpy as np
import pytest

from tests import processes
from tests.training import trained_params

DEADLINE_S = 600
STEPS = 6


def test_two_processes_train_as_one_process_with_four_devices(subprocess_env, tmp_path):
  """Each process reads its own shard (input_shards=2: shard p on process p); the 1-process
  run reads both shards into the same global batches. Parameters, checkpoints, input
  positions and the examples of each step agree."""
  flags = [f"--gin.TRAIN_STEPS={STEPS}", "--gin.CHECKPOINT_PERIOD=3",
           "--gin.settings.Data.input_shards=2", "--gin.train_lib.train.log_example_ids=True"]
  port = processes.free_port()
  procs = [processes.start_training(tmp_path / "two", tmp_path / f"process{i}.log", *flags,
                                    *processes.cluster_flags(port, i), devices=2,
                                    env=subprocess_env) for i in range(2)]
  procs.append(processes.start_training(tmp_path / "one", tmp_path / "one.log", *flags,
                                        devices=4, env=subprocess_env))
  codes, _ = processes.wait_all(procs, DEADLINE_S)
  assert codes == [0, 0, 0], processes.logs(tmp_path)

  assert "over 4 devices of 2 processes" in (tmp_path / "process0.log").read_text()
  positions = sorted(p.name for p in (tmp_path / "two" / "input_positions" / str(STEPS)).glob(
      "input-*.index"))
  assert positions == ["input-000-of-002.index", "input-001-of-002.index"]
  ids = [[json.loads(line) for line in (tmp_path / run / "example_ids.jsonl").open()]
         for run in ("two", "one")]
  assert ids[0] == ids[1] and [r["step"] for r in ids[0]] == list(range(1, STEPS + 1))
  assert len(set(ids[0][0]["passage_ids"])) > 1  # a real batch, not a repeated example
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               trained_params(tmp_path / "two", STEPS), trained_params(tmp_path / "one", STEPS))


@pytest.mark.slow  # as tests/test_multiprocess_loss.py's dead peer, through the training loop
def test_a_killed_process_ends_the_other_with_an_error(subprocess_env, tmp_path):
  """Process 1 is killed (SIGKILL) mid-training; process 0 exits with JAX's errors naming
  the dead task within 30 s (its heartbeat timeout is 10 s; JAX's default, 100 s, takes about
  a minute), never hangs."""
  port = processes.free_port()
  procs = [processes.start_training(
      tmp_path / "run", tmp_path / f"process{i}.log", "--gin.TRAIN_STEPS=100000",
      "--heartbeat_timeout_seconds=10", *processes.cluster_flags(port, i), devices=2,
      env=subprocess_env) for i in range(2)]
  try:
    deadline = time.monotonic() + DEADLINE_S
    while not re.search(r" step \d+/", (tmp_path / "process0.log").read_text(errors="replace")):
      assert time.monotonic() < deadline and procs[0].poll() is None, processes.logs(tmp_path)
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    codes, _ = processes.wait_all(procs[:1], 30)
  finally:
    processes.wait_all(procs, 0)  # kills what still runs
  assert codes[0] not in (None, 0), f"process 0: {codes[0]}\n" + processes.logs(tmp_path)
  log = (tmp_path / "process0.log").read_text(errors="replace")
  assert "Task 1 heartbeat timeout" in log or "another task died" in log, log[-3000:]
