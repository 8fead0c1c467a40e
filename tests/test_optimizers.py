"""The paper's schedule and T5X's Adafactor."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samtone_jax import optimizers


def test_linear_decay_to_zero_at_the_last_step():
  schedule = optimizers.linear_decay_schedule(1e-3, 20_000)
  np.testing.assert_allclose([schedule(0), schedule(10_000), schedule(20_000)],
                             [1e-3, 5e-4, 0.0], atol=1e-12)
  assert schedule(25_000) == 0.0


def test_warmup_then_decay():
  schedule = optimizers.linear_decay_schedule(1e-3, 1_000, warmup_steps=100)
  np.testing.assert_allclose([schedule(0), schedule(50), schedule(100), schedule(550),
                              schedule(1_000)], [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-12)


@pytest.mark.parametrize("kwargs, name", [
    (dict(learning_rate=0.0), "learning_rate"), (dict(train_steps=0), "TRAIN_STEPS"),
    (dict(train_steps=10, warmup_steps=10), "warmup_steps")])
def test_bad_schedules_are_refused(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optimizers.linear_decay_schedule(**kwargs)


def test_adafactor_factors_matrices_and_has_no_momentum():
  params = {"kernel": jnp.ones((256, 512)), "scale": jnp.ones((512,))}
  state = optimizers.adafactor(1e-3).init(params)
  factored = [s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "v_row"))
              if hasattr(s, "v_row")][0]
  assert factored.v_row["kernel"].shape == (256,) and factored.v_col["kernel"].shape == (512,)
  assert factored.v["scale"].shape == (512,)  # vectors keep full second moments
  sizes = sum(x.size for x in jax.tree.leaves(state))
  assert sizes < 256 * 512  # no full-size moment for the matrix, and no momentum


def test_adafactor_clips_updates_to_rms_one_before_scaling():
  params = {"kernel": jnp.ones((256, 256))}
  grads = {"kernel": jnp.full((256, 256), 1e6)}
  tx = optimizers.adafactor(1.0, multiply_by_parameter_scale=False)
  updates, _ = tx.update(grads, tx.init(params), params)
  rms = float(jnp.sqrt(jnp.mean(updates["kernel"] ** 2)))
  assert rms == pytest.approx(1.0, rel=1e-3)
  assert isinstance(tx, optax.GradientTransformation)
