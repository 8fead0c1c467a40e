"""A process whose restores of one checkpoint step fail, as if its view of that checkpoint's
array files were damaged while its peers read them whole (tests/test_damaged_checkpoints.py).

The step is the variable FAIL_RESTORE_STEP (none when unset). Run as

  `python -m tests.multiprocess_restore_worker FLAGS...`: `python -m samtone_jax.train FLAGS`;
  `python -m tests.multiprocess_restore_worker load_params --process_id=I --port=P
   --checkpoint=MODEL_DIR --out=FILE`: joins a 2-process JAX cluster on 127.0.0.1 (gloo CPU
   collectives, 2 simulated devices a process), loads the parameters of MODEL_DIR's newest
   checkpoint and writes "loaded", or the error, to FILE.
"""

import argparse
import os
import pathlib
import sys

from tests import cluster

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2


def fail_restores(step: int) -> None:
  """Makes orbax's restores of the arrays of checkpoint `step` raise (before the barrier
  with which orbax ends a restore)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restore = ocp.PyTreeCheckpointHandler.restore

  def failing(self, directory, *args, **kwargs):
    if pathlib.Path(directory).parent.name == str(step):  # checkpoints/<step>/<item>
      raise OSError(f"{directory}: damaged in this process's view")
    return restore(self, directory, *args, **kwargs)

  ocp.PyTreeCheckpointHandler.restore = failing


def load_params(argv) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  jax = cluster.join(args.process_id, args.port, NUM_PROCESSES, DEVICES_PER_PROCESS)
  from samtone_jax import checkpoints, launch, pretrained, run_dir  # pylint: disable=g-import-not-at-top
  run = run_dir.RunDir(pathlib.Path(args.checkpoint))
  model, macros = launch.read_run([str(run.config)], ["TASK_FEATURE_LENGTHS"])
  try:
    checkpoints.load_params(model, run.path, macros["TASK_FEATURE_LENGTHS"])
    result = "loaded"
  except pretrained.CheckpointError as e:
    result = str(e)
  pathlib.Path(args.out).write_text(result)
  jax.distributed.shutdown()


def main():
  if "FAIL_RESTORE_STEP" in os.environ:
    fail_restores(int(os.environ["FAIL_RESTORE_STEP"]))
  if sys.argv[1:2] == ["load_params"]:
    load_params(sys.argv[2:])
  else:
    from samtone_jax import train  # pylint: disable=g-import-not-at-top
    train.main()


if __name__ == "__main__":
  main()
