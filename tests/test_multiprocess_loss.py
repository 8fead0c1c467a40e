"""Two JAX processes on 127.0.0.1 (gloo CPU collectives, 2 devices each) compute the sharded
loss of one global batch, each feeding its local half; the value and the gradient rows equal
the single-process loss. Every run is bounded in time: a process that fails or hangs ends
the test, and its peer is killed."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from samtone_jax import losses
from tests import multiprocess_loss_worker as worker
from tests import processes

DEADLINE_S = 240


def _launch(tmp_path, port, process_id, *extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  log = open(tmp_path / f"process{process_id}.log", "w")
  proc = subprocess.Popen(
      [sys.executable, "-m", "tests.multiprocess_loss_worker", f"--process_id={process_id}",
       f"--port={port}", f"--out={tmp_path / f'process{process_id}.npz'}", *extra],
      cwd=processes.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  return proc


def test_two_processes_equal_one(tmp_path):
  port = processes.free_port()
  procs = [_launch(tmp_path, port, i) for i in range(worker.NUM_PROCESSES)]
  codes, _ = processes.wait_all(procs, DEADLINE_S)
  assert codes == [0] * worker.NUM_PROCESSES, processes.logs(tmp_path)

  arrays = {k: jnp.asarray(v) for k, v in worker.global_batch().items()}
  floats = ("query_emb", "passage_emb", "negative_emb")
  (want, want_metrics), want_grads = jax.value_and_grad(
      lambda q, p, n: losses.contrastive_loss(
          q, p, negative_emb=n, query_ids=arrays["query_ids"],
          passage_ids=arrays["passage_ids"], **worker.OPTIONS),
      (0, 1, 2), has_aux=True)(*(arrays[k] for k in floats))
  half = worker.BATCH // worker.NUM_PROCESSES
  for i in range(worker.NUM_PROCESSES):
    out = np.load(tmp_path / f"process{i}.npz")
    np.testing.assert_allclose(out["loss"], want, rtol=1e-5)
    for k, v in want_metrics.items():
      np.testing.assert_allclose(out[f"metric_{k}"], v, rtol=1e-5, atol=1e-6, err_msg=k)
    for j, g in enumerate(want_grads):
      np.testing.assert_allclose(out[f"grad_{j}"], g[i * half:(i + 1) * half],
                                 rtol=1e-4, atol=1e-6, err_msg=floats[j])


def test_a_dead_peer_ends_the_other_process(tmp_path):
  """Process 1 dies after joining; process 0, blocked in the collectives, exits by itself
  (the coordination service's heartbeat, 10 s in the worker) instead of hanging."""
  port = processes.free_port()
  procs = [_launch(tmp_path, port, 0), _launch(tmp_path, port, 1, "--exit_after_initialize")]
  assert procs[1].wait(timeout=DEADLINE_S) == 3, processes.logs(tmp_path)
  try:
    code = procs[0].wait(timeout=120)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    raise AssertionError("process 0 still ran 120 s after its peer died\n"
                         + processes.logs(tmp_path))
  assert code != 0, processes.logs(tmp_path)
  assert "another task died" in (tmp_path / "process0.log").read_text(), processes.logs(tmp_path)
