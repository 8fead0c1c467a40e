"""Test set-up: 8 simulated CPU devices, so that sharding tests run on any machine, and the
real published data of ../shared/data where it exists.

XLA reads the device-count flag once, when JAX first starts a backend, so it is set here,
before any test module imports jax.
"""

import os
import pathlib

import pytest

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Real published files (../shared/data beside the checkout): present on the project's
# machines and in CI, absent from a user's clone, where the tests that read them skip.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"no real data at {SHARED_DATA}")
  return SHARED_DATA
