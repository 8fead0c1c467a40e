"""Crash campaign: training is killed with SIGKILL at random moments, half of them while a
checkpoint is being written, and resumed each time (the same command, the same MODEL_DIR).
At the end the parameters equal those of an uninterrupted run, no step was repeated or
skipped, every example was seen exactly as often (by the content ids each step logged), and
every checkpoint left restores (no temporary folder, no orphaned input position). Then
one more restart is killed once two checkpoints exist, and an array file of the latest is
cut to half its size: the last restart moves it aside and resumes from the one before.

Marked slow (a few minutes): `pytest -m slow tests/test_crash_campaign.py -s` runs the
campaigns of 3 and of 10 kills (docs/reliability.md). The default run checks resuming
after a stop (tests/test_train.py) and from a damaged checkpoint
(tests/test_damaged_checkpoints.py).
"""

import collections
import json
import pathlib
import random
import re
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import processes
from tests.checkpoint_files import array_file, truncate
from tests.training import trained_params

STEPS, PERIOD = 40, 4
FLAGS = [f"--gin.TRAIN_STEPS={STEPS}", f"--gin.CHECKPOINT_PERIOD={PERIOD}",
         "--gin.train_lib.train.log_period=1", "--gin.train_lib.train.log_example_ids=True"]
DEADLINE_S = 300  # a run, from its start to its end or kill


def _start(model_dir, env):
  return processes.start_training(model_dir, model_dir.parent / f"{model_dir.name}.log",
                                  *FLAGS, env=env)


class _Steps:
  """The steps that a training log (an open binary file) reports from now on, read as it
  grows."""

  def __init__(self, log):
    self._file = log
    self._file.seek(0, 2)
    self._partial, self.seen = b"", []

  def __call__(self) -> list[int]:
    *lines, self._partial = (self._partial + self._file.read()).split(b"\n")
    self.seen += [int(m) for line in lines for m in re.findall(rb" step (\d+)/", line)]
    return self.seen


def _being_written(checkpoints: pathlib.Path) -> list[int]:
  """Steps whose checkpoint is being written: orbax's temporary folders, renamed when whole."""
  return [int(p.name.split(".")[0]) for p in checkpoints.glob("*.orbax-checkpoint-tmp*")]


def _kill_once(model_dir, env, during_checkpoint: bool, rng: random.Random) -> dict:
  """Starts the run and SIGKILLs it at a random step of the next two checkpoint periods: just
  after the step, or while the first checkpoint from that step on is being written."""
  log = model_dir.parent / f"{model_dir.name}.log"
  log.touch()
  with log.open("rb") as f:
    steps = _Steps(f)
    proc = _start(model_dir, env)
    deadline, target = time.monotonic() + DEADLINE_S, None
    try:
      while True:
        assert proc.poll() is None and time.monotonic() < deadline, processes.logs(log.parent)
        seen = steps()
        if seen and target is None:
          target = rng.randint(seen[0], min(seen[0] + 2 * PERIOD, STEPS - 2))
        if seen and (max(_being_written(model_dir / "checkpoints"), default=0) >= target
                     if during_checkpoint else seen[-1] >= target):
          break
        time.sleep(0.002)
      if not during_checkpoint:
        time.sleep(rng.uniform(0, 0.05))
      proc.send_signal(signal.SIGKILL)
      proc.wait()
    finally:
      processes.wait_all([proc], 0)
    seen = steps()
  return {"from_step": seen[0], "last_step_logged": seen[-1],
          "checkpoint_being_written": max(_being_written(model_dir / "checkpoints"),
                                          default=None)}


def _kill_with_two_checkpoints(model_dir, env) -> list[int]:
  """Restarts the run and SIGKILLs it once it has two whole checkpoints (one to damage, one
  to fall back to); returns their steps."""
  log = model_dir.parent / f"{model_dir.name}.log"
  proc = _start(model_dir, env)
  deadline = time.monotonic() + DEADLINE_S
  try:
    while True:
      assert proc.poll() is None and time.monotonic() < deadline, processes.logs(log.parent)
      steps = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir()
                     if p.name.isdigit())
      if len(steps) >= 2:
        break
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    processes.wait_all([proc], 0)
  return steps


def _history(model_dir) -> dict[int, dict]:
  """step -> the ids it trained on, as the model saw them: a restart that resumes at step s
  replaces the lines of steps >= s that the killed run logged. Checks that each restart
  resumed right after a checkpointed step (no step repeated from elsewhere, none skipped)."""
  history, last = {}, 0
  for line in (model_dir / "example_ids.jsonl").open():
    record = json.loads(line)
    step = record.pop("step")
    assert step <= last + 1, f"step {step} after step {last}: skipped steps"
    if step <= last:
      assert (step - 1) % PERIOD == 0, f"resumed at step {step}, not after a checkpoint"
      history = {s: ids for s, ids in history.items() if s < step}
    history[step], last = record, step
  return history


def _examples(history) -> collections.Counter:
  return collections.Counter(pair for ids in history.values()
                             for pair in zip(ids["query_ids"], ids["passage_ids"]))


@pytest.mark.slow
@pytest.mark.parametrize("kills", [3, 10])
def test_killed_and_resumed_training_equals_an_uninterrupted_run(subprocess_env,
                                                                 tmp_path, kills):
  whole = _start(tmp_path / "whole", subprocess_env)
  assert processes.wait_all([whole], DEADLINE_S)[0] == [0], processes.logs(tmp_path)

  rng = random.Random(kills)
  crashed = tmp_path / "crashed"
  survived = [_kill_once(crashed, subprocess_env, i % 2 == 1, rng) for i in range(kills)]
  steps = _kill_with_two_checkpoints(crashed, subprocess_env)
  truncate(array_file(crashed / "checkpoints" / str(max(steps))))
  final = _start(crashed, subprocess_env)
  assert processes.wait_all([final], DEADLINE_S)[0] == [0], processes.logs(tmp_path)
  during_writes = sum(k["checkpoint_being_written"] is not None for k in survived)
  print(f"\ncrash campaign: survived {len(survived)} of {kills} SIGKILLs, {during_writes} of"
        f" them during a checkpoint write: {survived}")
  assert during_writes >= kills // 2

  jax.tree.map(np.testing.assert_array_equal, trained_params(crashed, STEPS),
               trained_params(tmp_path / "whole", STEPS))
  history, reference = _history(crashed), _history(tmp_path / "whole")
  assert sorted(history) == list(range(1, STEPS + 1))
  assert history == reference
  assert _examples(history) == _examples(reference)

  manager = ocp.CheckpointManager((crashed / "checkpoints").absolute())
  folders = sorted(p.name for p in (crashed / "checkpoints").iterdir())
  assert folders == sorted(str(s) for s in manager.all_steps()), folders  # no temporary
  for step in manager.all_steps():  # the whole train state, optimizer included
    state = manager.restore(step)
    assert int(state["step"]) == step
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
  assert sorted(p.name for p in (crashed / "input_positions").iterdir()) == folders
  assert (crashed / "damaged" / str(max(steps)) / "checkpoint").is_dir()
