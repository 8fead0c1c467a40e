"""Test set-up: 8 simulated CPU devices, so that sharding tests run on any machine.

XLA reads the flag once, when JAX first starts a backend, so it is set here, before any test
module imports jax.
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
