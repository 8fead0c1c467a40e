"""A checkpoint path resolved once, to one step for every process; checkpoints restored on
other devices than those that saved them."""

import os
import subprocess
import sys

import jax
import numpy as np
from flax import traverse_util

from jax.experimental import multihost_utils

from samtone_jax import checkpoints, launch, partitioning
from tests.training import ROOT, run_training, trained_params

# Loads a run's parameters with checkpoints.load_params (as the evaluate, analysis and export
# commands do) and writes them, flattened, to an .npz file.
_LOAD_PARAMS = """
import sys
import jax
import numpy as np
from flax import traverse_util
from samtone_jax import checkpoints, launch

model_dir, out = sys.argv[1:]
model, macros = launch.read_run([f"{model_dir}/config.gin"], ["TASK_FEATURE_LENGTHS"])
params = checkpoints.load_params(model, model_dir, macros["TASK_FEATURE_LENGTHS"])
assert len(jax.devices()) == 1
np.savez(out, **{"/".join(k): np.asarray(v)
                 for k, v in traverse_util.flatten_dict(params).items()})
"""


def test_load_params_restores_a_checkpoint_of_8_devices_on_1(tfds_dir, tmp_path):
  """A checkpoint saved with the weights split over a 4x2 mesh of 8 devices loads, exactly,
  in a process with one device (a TPU-trained run evaluated or exported on a laptop)."""
  assert jax.device_count() == 8
  run_training(tmp_path / "run", "TRAIN_STEPS = 1", "NUM_PARTITIONS = 2", "EVAL_SPLIT = None",
               "EVAL_TASKS = []")
  saved = {"/".join(k): np.asarray(v)
           for k, v in traverse_util.flatten_dict(trained_params(tmp_path / "run", 1)).items()}
  done = subprocess.run(
      [sys.executable, "-c", _LOAD_PARAMS, str(tmp_path / "run"), str(tmp_path / "loaded.npz")],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1"))
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  with np.load(tmp_path / "loaded.npz") as loaded:
    assert sorted(loaded) == sorted(saved)
    for name, value in saved.items():
      np.testing.assert_array_equal(loaded[name], value, err_msg=name)

  # With the model, on the training mesh: partitioned as training partitions them.
  model, macros = launch.read_run([str(tmp_path / "run" / "config.gin")],
                                  ["TASK_FEATURE_LENGTHS"])
  mesh = partitioning.create_mesh(2)
  params = traverse_util.flatten_dict(checkpoints.load_params(
      model, tmp_path / "run", macros["TASK_FEATURE_LENGTHS"], mesh))
  split = {"/".join(k) for k, v in params.items() if "model" in v.sharding.spec}
  assert any("mlp" in name for name in split) and any("attention" in name for name in split)
  per_device = sum(v.addressable_shards[0].data.size for v in params.values())
  assert per_device < 0.75 * sum(v.size for v in params.values())
  for name, value in params.items():
    np.testing.assert_array_equal(np.asarray(value), saved["/".join(name)], err_msg=name)


def test_every_process_pins_process_0s_step(tiny_run, monkeypatch):
  """Process 0 found step 4; this process, looking a moment later, finds step 8 (saved in
  between): it loads and labels step 4 too."""
  run = tiny_run[1]
  assert checkpoints.pinned_checkpoint(run) == (run / "checkpoints" / "8", 8)
  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda value: value * 0 + 4)
  assert checkpoints.pinned_checkpoint(run) == (run / "checkpoints" / "4", 4)
