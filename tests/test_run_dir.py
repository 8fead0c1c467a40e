"""A checkpoint path resolved once, to one step for every process."""

from jax.experimental import multihost_utils

from samtone_jax import run_dir


def test_every_process_pins_process_0s_step(tiny_run, monkeypatch):
  """Process 0 found step 4; this process, looking a moment later, finds step 8 (saved in
  between): it loads and labels step 4 too."""
  run = tiny_run[1]
  assert run_dir.pinned_checkpoint(run) == (run / "checkpoints" / "8", 8)
  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda value: value * 0 + 4)
  assert run_dir.pinned_checkpoint(run) == (run / "checkpoints" / "4", 4)
