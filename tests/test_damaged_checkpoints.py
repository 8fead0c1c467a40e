"""A damaged latest checkpoint: training falls back to the newest one that restores (or,
strict, refuses), and evaluate/export name the newest good one.

A run stopped at step 8 has checkpoints at steps 4 and 8; then one file of step 8 is cut to
half its size (a copy cut short, a full disk), and the same command resumes the run to step
12, in a new process as a restarted job would. The parameters must equal those of an
uninterrupted run.
"""

import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from samtone_jax import export, launch, pretrained, run_dir
from tests import processes
from tests.test_train import _params

def truncate(path: pathlib.Path) -> None:
  """Cuts a file to half its size."""
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def array_file(checkpoint: pathlib.Path) -> pathlib.Path:
  """The largest file of a checkpoint: array data (TensorStore's OCDBT data file)."""
  return max((p for p in checkpoint.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


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
  for name, flags in (("whole", ()), ("stopped", ("--gin.train_lib.train.steps_per_run=8",))):
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
  jax.tree.map(np.testing.assert_array_equal, _params(run.path, 12), _params(runs / "whole", 12))


def test_strict_restore_refuses_and_moves_nothing(runs, subprocess_env, tmp_path):
  run = _copy_of_stopped(runs, tmp_path)
  truncate(array_file(run.checkpoint(8)))
  code, log = _train(run.path, subprocess_env, "--gin.STRICT_RESTORE=True")
  assert code != 0 and "TrainingError" in log
  assert re.search(r"train: the checkpoint of step 8 \(.*checkpoints/8\) does not"
                   r" restore: .*STRICT_RESTORE = True refuses", log), log[-3000:]
  assert run.checkpoint(8).is_dir() and not (run.path / "damaged").exists()


def test_no_checkpoint_that_restores_stops_the_run_and_moves_nothing(runs, subprocess_env,
                                                                     tmp_path):
  run = _copy_of_stopped(runs, tmp_path)
  for step in (4, 8):
    truncate(array_file(run.checkpoint(step)))
  code, log = _train(run.path, subprocess_env)
  assert code != 0 and "TrainingError" in log
  assert re.search(r"train: no checkpoint of .* restores \(step 8: .*; step 4: .*\)\."
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
    run_dir.load_params(model, run.path, lengths)
  assert e.value.__context__ is None and e.value.__cause__ is None  # not the storage layer's
  with pytest.raises(pretrained.CheckpointError, match="--checkpoint=.*" + message):
    export.export(str(run.path), str(tmp_path / "exported"))
  jax.tree.map(np.testing.assert_array_equal, run_dir.load_params(model, run.checkpoint(4),
                                                                  lengths),
               _params(runs / "stopped", 4))


@pytest.mark.slow  # two processes; one process's fallback is checked above
def test_two_processes_agree_on_the_fallback(subprocess_env, tmp_path):
  """Only process 1's input position of step 8 is damaged: process 0 alone could resume
  from step 8, but both resume from step 4."""
  flags = ["--gin.TRAIN_STEPS=12", "--gin.CHECKPOINT_PERIOD=4",
           "--gin.train_lib.train.input_shards=2"]

  def both(*more):
    port = processes.free_port()
    procs = [processes.start_training(tmp_path / "run", tmp_path / f"process{i}.log", *flags,
                                      *more, *processes.cluster_flags(port, i), devices=2,
                                      env=subprocess_env) for i in range(2)]
    assert processes.wait_all(procs, 600)[0] == [0, 0], processes.logs(tmp_path)

  both("--gin.train_lib.train.steps_per_run=8")
  run = run_dir.RunDir(tmp_path / "run")
  truncate(next(run.input_position(8).glob("input-001-of-002.data-*")))
  for log in tmp_path.glob("process*.log"):
    log.write_text("")
  both()
  for i in range(2):
    log = (tmp_path / f"process{i}.log").read_text()
    assert "Resumed from step 4" in log, log[-3000:]
  assert "does not restore on process(es) [1]" in (tmp_path / "process0.log").read_text()
  assert (run.path / "damaged" / "8" / "input_position").is_dir()
  assert run.latest_step() == 12
