"""A damaged latest checkpoint: training falls back to the newest one that restores (or,
strict, refuses), and evaluate/export name the newest good one.

A run stopped at step 8 has checkpoints at steps 4 and 8; then one file of step 8 is cut to
half its size (a copy cut short, a full disk), and the same command resumes the run to step
12, in a new process as a restarted job would. The parameters must equal those of an
uninterrupted run.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Optional

import jax
import numpy as np
import pytest

from samtone_jax import checkpoints, export, launch, loop, pretrained, run_dir, settings
from tests import processes
from tests.checkpoint_files import array_file, truncate
from tests.training import trained_params


def metadata_file(checkpoint: pathlib.Path) -> pathlib.Path:
  """The TrainState item's metadata: its tree structure, shapes and dtypes."""
  return next(checkpoint.rglob("_METADATA"))


def position_file(position: pathlib.Path) -> pathlib.Path:
  """The input position's iterator checkpoint data of process 0."""
  return next(position.glob("input-000-of-*.data-*"))


DAMAGES = {
    "array data": lambda run: array_file(run.checkpoint(8)),
    "metadata": lambda run: metadata_file(run.checkpoint(8)),
    "input position": lambda run: position_file(run.input_position(8)),
}


def _train(model_dir: pathlib.Path, env: dict[str, str], *flags: str) -> tuple[int, str]:
  """(exit code, log) of the tiny run (12 steps, a checkpoint every 4) in a new process, as
  a restarted job would be (in this process, TensorStore's cache could hide a damage)."""
  log = model_dir.parent / f"{model_dir.name}.log"
  log.write_text("")
  [code], _ = processes.wait_all([processes.start_training(model_dir, log, *flags, env=env)],
                                 600)
  return code, log.read_text()


@pytest.fixture(scope="module")
def runs(subprocess_env, tmp_path_factory):
  """An uninterrupted run of 12 steps, and one stopped at step 8 (checkpoints 4 and 8)."""
  root = tmp_path_factory.mktemp("damage")
  for name, flags in (("whole", ()), ("stopped", ("--gin.settings.Checkpointing.steps_per_run=8",))):
    code, log = _train(root / name, subprocess_env, *flags)
    assert code == 0, log[-3000:]
  stopped = run_dir.RunDir(root / "stopped")
  assert sorted(int(p.name) for p in stopped.checkpoints.iterdir()) == [4, 8]
  return root


def _copy_of_stopped(runs: pathlib.Path, tmp_path: pathlib.Path) -> run_dir.RunDir:
  return run_dir.RunDir(shutil.copytree(runs / "stopped", tmp_path / "run"))


@pytest.mark.parametrize("damage", [
    "array data", pytest.param("metadata", marks=pytest.mark.slow),
    pytest.param("input position", marks=pytest.mark.slow)])
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(
    runs, subprocess_env, tmp_path, damage):
  run = _copy_of_stopped(runs, tmp_path)
  truncate(DAMAGES[damage](run))
  code, log = _train(run.path, subprocess_env)
  assert code == 0, log[-3000:]
  assert f"The checkpoint of step 8 ({run.checkpoint(8)}) does not restore" in log, log[-3000:]
  assert "Resumed from step 4" in log and run.latest_step() == 12
  moved = run.path / "damaged" / "8"
  assert (moved / "checkpoint").is_dir() and (moved / "input_position").is_dir()
  jax.tree.map(np.testing.assert_array_equal, trained_params(run.path, 12),
               trained_params(runs / "whole", 12))


def test_strict_restore_refuses_and_moves_nothing(runs, subprocess_env, tmp_path):
  run = _copy_of_stopped(runs, tmp_path)
  truncate(array_file(run.checkpoint(8)))
  code, log = _train(run.path, subprocess_env, "--gin.STRICT_RESTORE=True")
  assert code != 0 and "TrainingError" in log
  assert re.search(r"checkpoints: the checkpoint of step 8 \(.*checkpoints/8\) does not"
                   r" restore: .*STRICT_RESTORE = True refuses", log), log[-3000:]
  assert run.checkpoint(8).is_dir() and not (run.path / "damaged").exists()


def test_no_checkpoint_that_restores_stops_the_run_and_moves_nothing(runs, subprocess_env,
                                                                     tmp_path):
  run = _copy_of_stopped(runs, tmp_path)
  for step in (4, 8):
    truncate(array_file(run.checkpoint(step)))
  code, log = _train(run.path, subprocess_env)
  assert code != 0 and "TrainingError" in log
  assert re.search(r"checkpoints: no checkpoint of .* restores \(step 8: .*; step 4: .*\)\."
                   r" Nothing was moved", log), log[-3000:]
  assert run.checkpoint(8).is_dir() and run.checkpoint(4).is_dir()
  assert not (run.path / "damaged").exists()


def test_evaluate_and_export_name_the_newest_good_checkpoint(runs, tmp_path):
  run = _copy_of_stopped(runs, tmp_path)
  truncate(array_file(run.checkpoint(8)))
  model, macros = launch.read_run([str(run.config)], ["TASK_FEATURE_LENGTHS"])
  lengths = macros["TASK_FEATURE_LENGTHS"]
  message = (rf"the checkpoint of step 8 \({run.checkpoint(8)}\) does not restore: .* The"
             rf" newest checkpoint that does is step 4: {run.checkpoint(4)}\.")
  with pytest.raises(pretrained.CheckpointError, match="CHECKPOINT_PATH=.*" + message) as e:
    checkpoints.load_params(model, run.path, lengths)
  assert e.value.__context__ is None and e.value.__cause__ is None  # not the storage layer's
  with pytest.raises(pretrained.CheckpointError, match="--checkpoint=.*" + message):
    export.export(str(run.path), str(tmp_path / "exported"))
  jax.tree.map(np.testing.assert_array_equal, checkpoints.load_params(model, run.checkpoint(4),
                                                                  lengths),
               trained_params(runs / "stopped", 4))


def test_a_checkpoint_that_cannot_be_moved_aside_stops_the_run_with_the_reason(tmp_path):
  """MODEL_DIR/damaged is a file: the move fails, and the run stops with a TrainingError
  naming the target and what to do (agreed, so with several processes every one stops)."""
  run = run_dir.RunDir(tmp_path / "run")
  for folder in (run.checkpoint(8), run.input_position(8)):
    folder.mkdir(parents=True)
  (run.path / "damaged").write_text("")
  checkpointer = checkpoints.Checkpointer(run, batches=None,
                                         checkpointing=settings.Checkpointing())
  with pytest.raises(loop.TrainingError, match=rf"the checkpoint of step 8 .* could not be"
                     rf" moved aside to {run.path / 'damaged' / '8'}: (FileExistsError|"
                     r"NotADirectoryError): .* aside by hand\."):
    checkpointer._move_aside(8)  # pylint: disable=protected-access
  assert run.checkpoint(8).is_dir() and run.input_position(8).is_dir()


def test_two_processes_name_the_same_newest_good_checkpoint(runs, tmp_path):
  """load_params on two processes, whose restore of step 8 fails on process 1 only (a hook
  in tests/multiprocess_restore_worker.py, before orbax's barrier): both end with the error
  naming step 4, none waits for the other."""
  run = _copy_of_stopped(runs, tmp_path)
  port = processes.free_port()
  procs = []
  for i in range(2):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if i == 1:
      env["FAIL_RESTORE_STEP"] = "8"
    with open(tmp_path / f"process{i}.log", "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "tests.multiprocess_restore_worker", "load_params",
           f"--process_id={i}", f"--port={port}", f"--checkpoint={run.path}",
           f"--out={tmp_path / f'process{i}.out'}"], cwd=processes.ROOT, env=env,
          stdout=log, stderr=subprocess.STDOUT))
  codes, _ = processes.wait_all(procs, 240)
  assert codes == [0, 0], processes.logs(tmp_path)
  for i in range(2):
    assert re.search(rf"the checkpoint of step 8 \({run.checkpoint(8)}\) does not restore: .*"
                     rf" The newest checkpoint that does is step 4: {run.checkpoint(4)}\.",
                     (tmp_path / f"process{i}.out").read_text()), processes.logs(tmp_path)
  assert "damaged in this process's view" in (tmp_path / "process1.out").read_text()


TWO_PROCESS_FLAGS = ("--gin.TRAIN_STEPS=12", "--gin.CHECKPOINT_PERIOD=4",
                     "--gin.settings.Data.input_shards=2")


def _train_on_two_processes(model_dir: pathlib.Path, env: dict[str, str], *flags: str,
                            fail_restore_on_process_1: Optional[int] = None) -> list[str]:
  """The logs of the tiny run (12 steps, a checkpoint every 4, 2 input shards) on two
  processes of 2 devices each, in new processes; with `fail_restore_on_process_1`, process
  1's restores of that step fail (tests/multiprocess_restore_worker.py)."""
  port = processes.free_port()
  procs = []
  for i in range(2):
    log = model_dir.parent / f"{model_dir.name}.process{i}.log"
    log.write_text("")
    failing = i == 1 and fail_restore_on_process_1 is not None
    procs.append(processes.start_training(
        model_dir, log, *TWO_PROCESS_FLAGS, *flags, *processes.cluster_flags(port, i),
        devices=2, env=dict(env, FAIL_RESTORE_STEP=str(fail_restore_on_process_1))
        if failing else env, module="tests.multiprocess_restore_worker" if failing
        else "samtone_jax.train"))
  codes, _ = processes.wait_all(procs, 600)
  logs = [(model_dir.parent / f"{model_dir.name}.process{i}.log").read_text()
          for i in range(2)]
  assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
  return logs


@pytest.fixture(scope="module")
def stopped_on_two_processes(subprocess_env, tmp_path_factory):
  """The run of `_train_on_two_processes` stopped at step 8 (checkpoints 4 and 8)."""
  model_dir = tmp_path_factory.mktemp("two_processes") / "stopped"
  _train_on_two_processes(model_dir, subprocess_env, "--gin.settings.Checkpointing.steps_per_run=8")
  return model_dir


@pytest.mark.slow  # two processes; one process's fallback is checked above
def test_two_processes_agree_on_the_fallback(stopped_on_two_processes, subprocess_env,
                                             tmp_path):
  """Only process 1's input position of step 8 is damaged: process 0 alone could resume
  from step 8, but both resume from step 4."""
  run = run_dir.RunDir(shutil.copytree(stopped_on_two_processes, tmp_path / "run"))
  truncate(next(run.input_position(8).glob("input-001-of-002.data-*")))
  logs = _train_on_two_processes(run.path, subprocess_env)
  for log in logs:
    assert "Resumed from step 4" in log, log[-3000:]
  assert "does not restore: it failed on process(es) [1]" in logs[0]
  assert (run.path / "damaged" / "8" / "input_position").is_dir()
  assert run.latest_step() == 12


@pytest.mark.slow  # two processes; load_params' agreement is checked above
def test_a_checkpoint_that_fails_on_one_process_only_falls_back_on_both(
    stopped_on_two_processes, subprocess_env, tmp_path):
  """Process 1's restore of step 8's arrays fails inside orbax's restore, before the barrier
  that ends it, where process 0 waits: both still agree, resume from step 4 and finish."""
  run = run_dir.RunDir(shutil.copytree(stopped_on_two_processes, tmp_path / "run"))
  logs = _train_on_two_processes(run.path, subprocess_env, fail_restore_on_process_1=8)
  for log in logs:
    assert "Resumed from step 4" in log, log[-3000:]
  assert "does not restore: it failed on process(es) [1]" in logs[0]
  assert "damaged in this process's view" in logs[1]
  assert (run.path / "damaged" / "8" / "checkpoint").is_dir()
  assert run.latest_step() == 12
