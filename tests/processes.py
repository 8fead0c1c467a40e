"""Helpers of the tests that run JAX in subprocesses: free ports, `python -m
samtone_jax.train` of the tiny run on N simulated CPU devices, bounded waits, logs, and the
check that a run's log is quiet."""

import os
import pathlib
import re
import socket
import subprocess
import sys
import time

from tests.training import ROOT, TINY_RUN

# The tiny run of tests/training.py, without evaluation, as command-line flags.
TINY_FLAGS = ["--gin_file=experiments/quickstart.gin", *(f"--gin.{b}" for b in TINY_RUN),
              "--gin.EVAL_SPLIT=None", "--gin.EVAL_TASKS=[]"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def cluster_flags(port: int, index: int, count: int = 2) -> list[str]:
  """The launch flags of process `index` of `count`, process 0 listening on `port`."""
  return [f"--coordinator_address=127.0.0.1:{port}", f"--process_count={count}",
          f"--process_index={index}"]


def start_training(model_dir, log, *flags: str, env: dict[str, str], devices: int = 1,
                   module: str = "samtone_jax.train") -> subprocess.Popen:
  """`python -m samtone_jax.train` (or `module`, which runs it) of the tiny run into
  `model_dir` on `devices` simulated CPU devices, with the variables `env` (conftest's
  `subprocess_env`), output to file `log`."""
  with open(log, "a") as out:
    return subprocess.Popen(
        [sys.executable, "-m", module, *TINY_FLAGS,
         f"--gin.MODEL_DIR='{model_dir}'", *flags], cwd=ROOT,
        env=dict(os.environ, **env, JAX_PLATFORMS="cpu",
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"),
        stdout=out, stderr=subprocess.STDOUT)


def start_workers(module: str, count: int, folder, *flags: str) -> list[subprocess.Popen]:
  """`count` processes of `python -m <module> --process_id=i --port=P <flags>` on one free
  port, each logging to `folder`/process<i>.log; XLA_FLAGS left to the worker (it sets its
  own device count)."""
  port = free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = []
  for i in range(count):
    with open(pathlib.Path(folder) / f"process{i}.log", "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", module, f"--process_id={i}", f"--port={port}", *flags],
          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def wait_all(procs, deadline_s: float):
  """Waits for every process; kills the rest as soon as one fails or time runs out.

  Returns the exit codes (None for a process that was killed) and the seconds waited."""
  start = time.monotonic()
  try:
    while time.monotonic() - start < deadline_s:
      codes = [p.poll() for p in procs]
      if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
        break
      time.sleep(0.2)
    return [p.poll() for p in procs], time.monotonic() - start
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def logs(folder) -> str:
  """The ends of the *.log files in `folder`, for assertion messages."""
  return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
                   for f in sorted(pathlib.Path(folder).glob("*.log")))


def assert_quiet(log: str) -> None:
  """A successful run on CPU prints no error line, and nothing about CUDA (gin's search for
  its include files, TensorFlow's GPU probing)."""
  noisy = [line for line in log.splitlines() if re.search(r"\bERROR\b|cuda|cuInit", line,
                                                          re.IGNORECASE)]
  assert not noisy, noisy
