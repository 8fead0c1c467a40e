"""The train step: sharded equals single-device, and the loss goes down."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samtone_jax import dual_encoder, losses, optimizers, partitioning, t5, trainer

TINY = t5.T5Config(vocab_size=64, d_model=16, d_ff=32, num_heads=2, head_dim=8, num_layers=2,
                   dropout_rate=0.1)
LENGTHS = {"queries": 8, "passages": 12}


def _batches(count, batch_size=16, seed=0):
  """Learnable pairs: each passage repeats its query's tokens, among noise."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    queries = rng.integers(3, 64, (batch_size, LENGTHS["queries"])).astype(np.int32)
    passages = rng.integers(3, 64, (batch_size, LENGTHS["passages"])).astype(np.int32)
    passages[:, :6] = queries[:, :6]
    out.append({"queries": queries, "passages": passages,
                "query_ids": np.arange(batch_size, dtype=np.int32),
                "passage_ids": np.arange(batch_size, dtype=np.int32)})
  return out


def _train(mesh, batches, architecture="ade_spl"):
  model = dual_encoder.DualEncoder(TINY, architecture, embedding_dim=8)
  schedule = optimizers.linear_decay_schedule(1e-2, 100)
  optimizer = optimizers.adafactor(schedule)
  rules = partitioning.standard_logical_axis_rules()
  state, shardings = trainer.create_train_state(
      model, optimizer, jax.random.key(0), trainer.example_batch(16, LENGTHS), mesh, rules)
  loss_fn = losses.sharded_contrastive_loss(mesh, temperature=0.05, same_tower="query")
  step = trainer.compile_train_step(
      trainer.make_train_step(model, optimizer, loss_fn, schedule), shardings, mesh, rules)
  history = []
  for batch in batches:
    state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
    history.append(float(metrics["loss"]))
  return state, history


@pytest.mark.slow  # by default: the sharded loss equals the global one (test_sharded_losses),
# GradCache on a 4 x 2 mesh equals the plain step, 2 processes equal 1 (test_multiprocess_train)
def test_sharded_training_equals_one_device():
  batches = _batches(3)
  one, one_history = _train(partitioning.create_mesh(devices=jax.devices()[:1]), batches)
  mesh = partitioning.create_mesh(num_partitions=2)  # 4 x 2
  assert dict(mesh.shape) == {"data": 4, "model": 2}
  eight, eight_history = _train(mesh, batches)
  np.testing.assert_allclose(eight_history, one_history, rtol=1e-5)
  assert int(eight.step) == int(one.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               eight.params, one.params)
  # The state stays sharded as the rules say: a model-parallel kernel is split over "model".
  kernel = eight.params["query_tower"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")


@pytest.mark.slow  # tests/test_mixed_precision.py checks that a few steps learn
def test_loss_decreases_on_the_tiny_model():
  _, history = _train(partitioning.create_mesh(devices=jax.devices()[:1]), _batches(40))
  assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5]), history


def test_abstract_state_has_the_shapes_and_shardings_and_no_arrays():
  mesh = partitioning.create_mesh(num_partitions=2)
  model = dual_encoder.DualEncoder(TINY, "sde", embedding_dim=8)
  optimizer = optimizers.adafactor(1e-3)
  rules = partitioning.standard_logical_axis_rules()
  args = (model, optimizer, jax.random.key(0), trainer.example_batch(16, LENGTHS), mesh, rules)
  real, _ = trainer.create_train_state(*args)
  abstract, _ = trainer.create_train_state(*args, abstract=True)
  for a, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(real)):
    assert isinstance(a, jax.ShapeDtypeStruct)
    assert (a.shape, a.dtype, a.sharding) == (r.shape, r.dtype, r.sharding)


def test_skip_nonfinite_keeps_the_state_when_the_loss_or_gradient_is_not_finite():
  """The guarded step advances the step count; for a non-finite loss or gradient norm it
  keeps parameters and optimizer state as they were and reports `skipped` = 1."""
  def step(state, batch):  # a stand-in for make_train_step's: loss and gradient from `batch`
    new = trainer.TrainState(step=state.step + 1, params=state.params + batch["grad"],
                             opt_state=state.opt_state + 1.0)
    return new, {"loss": batch["loss"], "grad_norm": jnp.linalg.norm(batch["grad"])}

  guarded = jax.jit(trainer.skip_nonfinite(step))
  state = trainer.TrainState(step=jnp.int32(4), params=jnp.ones(3), opt_state=jnp.zeros(3))
  for loss, grad in ((jnp.nan, jnp.ones(3)), (1.0, jnp.array([0.0, jnp.inf, 0.0]))):
    kept, metrics = guarded(state, {"loss": jnp.float32(loss), "grad": grad})
    assert int(kept.step) == 5 and float(metrics["skipped"]) == 1.0
    np.testing.assert_array_equal(kept.params, state.params)
    np.testing.assert_array_equal(kept.opt_state, state.opt_state)
  taken, metrics = guarded(state, {"loss": jnp.float32(2.0), "grad": jnp.ones(3)})
  want, _ = step(state, {"loss": 2.0, "grad": jnp.ones(3)})
  assert int(taken.step) == 5 and float(metrics["skipped"]) == 0.0
  np.testing.assert_array_equal(taken.params, want.params)
  np.testing.assert_array_equal(taken.opt_state, want.opt_state)


def test_a_skipped_step_leaves_the_learning_rate_on_schedule():
  """Batches ok / NaN / ok under SGD with a rate of 1e-3 decaying to 0 over 10 steps: the
  third step logs schedule(2) = 8e-4 and applies it, to the gradient at the first step's
  parameters, as if the poisoned batch had never been drawn (not 9e-4, one step behind)."""
  model = dual_encoder.DualEncoder(dataclasses.replace(TINY, dropout_rate=0.0), "sde",
                                   embedding_dim=8)
  schedule = optimizers.linear_decay_schedule(1e-3, 10)
  optimizer = optax.sgd(schedule)
  mesh = partitioning.create_mesh(devices=jax.devices()[:1])
  rules = partitioning.standard_logical_axis_rules()
  state, shardings = trainer.create_train_state(
      model, optimizer, jax.random.key(0), trainer.example_batch(16, LENGTHS), mesh, rules)
  loss_fn = functools.partial(losses.contrastive_loss, temperature=0.05, same_tower="query")
  step = trainer.compile_train_step(
      trainer.skip_nonfinite(trainer.make_train_step(model, optimizer, loss_fn, schedule)),
      shardings, mesh, rules)
  good, poisoned, last = [{k: jnp.asarray(v) for k, v in b.items()} for b in _batches(3)]
  poisoned["queries"] = poisoned["queries"].at[0, 0].set(10**6)  # embeds as NaN

  state, _ = step(state, good)
  after_first = jax.device_get(state.params)  # the step donates the state it is given
  state, metrics = step(state, poisoned)
  assert float(metrics["skipped"]) == 1.0
  state, metrics = step(state, last)
  assert float(metrics["skipped"]) == 0.0 and int(state.step) == 3
  assert float(metrics["learning_rate"]) == pytest.approx(8e-4)

  grads = jax.jit(jax.grad(lambda p: trainer.batch_loss(model, loss_fn, p, last)[0]))(
      after_first)
  applied = jax.tree.map(lambda new, old: np.asarray(new) - old, state.params, after_first)
  for got, grad in zip(jax.tree.leaves(applied), jax.tree.leaves(grads)):
    want = -8e-4 * np.asarray(grad)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3 * np.abs(want).max() + 1e-12)
