"""The paper's schedule and T5X's Adafactor."""

import jax
import jax.numpy as jnp
import numpy as np
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


def test_initial_step_is_the_step_the_second_moment_decay_counts_from():
  """Adafactor with initial_step N from a fresh state updates as optax's Adafactor whose own
  step count is N (T5X's fine-tuning, which restores the pretrained step); the first
  second-moment estimate is then mostly the zero it starts from (decay 1 - (N + 1)^-0.8),
  where from step 0 it is the squared gradient itself (decay 0)."""
  params = {"w": jnp.linspace(-1.0, 1.0, 128 * 130).reshape(128, 130), "b": jnp.ones(7)}
  grads = jax.tree.map(lambda p: jnp.cos(3.0 * p) + 0.1, params)
  n = 1_000_000
  fine_tuning = optimizers.adafactor(1e-3, initial_step=n)
  updates, state = fine_tuning.update(grads, fine_tuning.init(params), params)
  plain = optimizers.adafactor(1e-3)
  at_n = jax.tree.map(lambda x: jnp.full_like(x, n) if jnp.issubdtype(x.dtype, jnp.integer)
                      else x, plain.init(params))
  want, _ = plain.update(grads, at_n, params)
  jax.tree.map(np.testing.assert_allclose, updates, want)
  _, from_scratch = plain.update(grads, plain.init(params), params)
  v = lambda s: s[0].v["b"]  # the unfactored second moment of the bias
  decay = 1.0 - (n + 1) ** -0.8
  np.testing.assert_allclose(v(state), (1 - decay) * grads["b"] ** 2 + 1e-30, rtol=1e-3)
  np.testing.assert_allclose(v(from_scratch), grads["b"] ** 2 + 1e-30, rtol=1e-5)
  with pytest.raises(ValueError, match="ADAFACTOR_INITIAL_STEP"):
    optimizers.adafactor(1e-3, initial_step=-1)
