"""Joining a JAX cluster of CPU processes on 127.0.0.1, for the worker scripts of the
multi-process tests (tests/multiprocess_*_worker.py). Imports nothing heavy: JAX is
imported once the device count is set."""

import os


def join(process_id: int, port: int, num_processes: int, devices_per_process: int):
  """Sets up `devices_per_process` simulated CPU devices with gloo collectives, joins the
  cluster of process 0 on `port`, and returns the jax module."""
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
      process_id=process_id, initialization_timeout=60, heartbeat_timeout_seconds=10,
      shutdown_timeout_seconds=10)
  return jax
