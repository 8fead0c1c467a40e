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



@pytest.fixture(scope="session")
def subprocess_env(tmp_path_factory) -> dict[str, str]:
  """Environment variables of training subprocesses: TFDS_DATA_DIR holding the quickstart
  set, built once (a run on several processes needs its data prepared beforehand), and one
  JAX compilation cache for all (a restarted run compiles nothing again)."""
  import seqio  # pylint: disable=g-import-not-at-top
  import samtone_jax.tasks  # pylint: disable=g-import-not-at-top,unused-import
  from samtone_jax import inputs  # pylint: disable=g-import-not-at-top
  tfds_dir = tmp_path_factory.mktemp("quickstart_tfds")
  seqio.set_tfds_data_dir_override(str(tfds_dir))
  try:
    inputs.prepare("stdlib_code_search")
  finally:
    seqio.set_tfds_data_dir_override(None)
  return {"TFDS_DATA_DIR": str(tfds_dir),
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}
