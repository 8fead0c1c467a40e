"""Gradient caching: the chunked step's gradients equal the plain step's, on 1 and 8 devices.

The reference is the plain computation, differentiated end to end by JAX: `batch_loss` for a
model without dropout; with dropout, the same chunks encoded with the same keys but no
caching (written out here with numpy row indices), so that a second pass drawing other
dropout masks than the first would show.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from samtone_jax import dual_encoder, losses, optimizers, partitioning, t5, trainer

LENGTHS = {"queries": 8, "passages": 12}
BATCH, NEGATIVES = 16, 2


def _model(dropout_rate=0.0):
  config = t5.T5Config(vocab_size=64, d_model=16, d_ff=32, num_heads=2, head_dim=8,
                       num_layers=2, dropout_rate=dropout_rate)
  return dual_encoder.DualEncoder(config, "ade_spl", embedding_dim=8)


def _batch(seed=0):
  """Token ids with padding, hard negatives, and a duplicated passage (masking has work)."""
  rng = np.random.default_rng(seed)
  ids = lambda *shape: rng.integers(3, 64, shape).astype(np.int32)
  batch = {"queries": ids(BATCH, LENGTHS["queries"]),
           "passages": ids(BATCH, LENGTHS["passages"]),
           "negative_passages": ids(BATCH, NEGATIVES, LENGTHS["passages"]),
           "query_ids": np.arange(BATCH, dtype=np.int32),
           "passage_ids": np.arange(BATCH, dtype=np.int32)}
  batch["queries"][:, 5:] = 0
  batch["passages"][::3, 7:] = 0
  batch["passages"][5] = batch["passages"][2]
  batch["passage_ids"][5] = 2
  return batch


def _setup(mesh, model):
  """Sharded parameters, the sharded batch and the loss over `mesh`."""
  rules = partitioning.standard_logical_axis_rules()
  state, _ = trainer.create_train_state(
      model, optimizers.adafactor(1e-3), jax.random.key(1),
      trainer.example_batch(BATCH, LENGTHS, NEGATIVES), mesh, rules)
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  batch = {k: jax.device_put(v, sharding) for k, v in _batch().items()}
  loss_fn = losses.sharded_contrastive_loss(mesh, temperature=0.05, same_tower="both")
  return state.params, batch, loss_fn, rules


def _run(mesh, rules, fn, *args):
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return jax.device_get(jax.jit(fn)(*args))


MESHES = {  # name: (mesh factory, chunk size)
    "1 device": (lambda: partitioning.create_mesh(devices=jax.devices()[:1]), 4),
    "8 devices, data 8": (lambda: partitioning.create_mesh(), 8),
    "8 devices, data 4 x model 2": (lambda: partitioning.create_mesh(num_partitions=2), 4),
}


@pytest.mark.parametrize("name", [  # the 4 x 2 mesh splits the batch and the weights
    pytest.param("1 device", marks=pytest.mark.slow),
    pytest.param("8 devices, data 8", marks=pytest.mark.slow), "8 devices, data 4 x model 2"])
def test_gradients_equal_the_plain_step(name):
  make_mesh, chunk = MESHES[name]
  mesh = make_mesh()
  model = _model()
  params, batch, loss_fn, rules = _setup(mesh, model)
  rng = jax.random.key(7)
  plain = jax.value_and_grad(functools.partial(trainer.batch_loss, model, loss_fn),
                             has_aux=True)
  cached = functools.partial(trainer.grad_cache_loss_and_grad, model, loss_fn,
                             chunk_size=chunk)
  (plain_loss, plain_metrics), plain_grads = _run(mesh, rules, plain, params, batch, rng)
  (loss, metrics), grads = _run(mesh, rules, cached, params, batch, rng)
  assert BATCH // chunk > 1
  np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
  for key, value in plain_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  flat_plain = jax.tree_util.tree_leaves_with_path(plain_grads)
  for (path, reference), value in zip(flat_plain, jax.tree.leaves(grads)):
    assert np.abs(reference).max() > 0, path
    np.testing.assert_allclose(value, reference, rtol=1e-4, atol=1e-6 * np.abs(reference).max(),
                               err_msg=jax.tree_util.keystr(path))


def test_dropout_draws_the_same_masks_in_both_passes():
  """With dropout, the cached gradients are those of the chunks encoded with keys
  fold_in(rng, j), differentiated end to end; the plain step (one key for the whole batch)
  draws other masks, and its gradients differ."""
  mesh = partitioning.create_mesh()
  chunk = 8
  model = _model(dropout_rate=0.2)
  params, batch, loss_fn, rules = _setup(mesh, model)
  rng = jax.random.key(7)
  num_chunks = BATCH // chunk

  def reference(params, batch, rng):
    parts = []
    for j in range(num_chunks):
      rows = np.arange(j, BATCH, num_chunks)
      chunk_batch = {k: batch[k][rows] for k in ("queries", "passages", "negative_passages")}
      parts.append((rows, trainer.embed_batch(model, params, chunk_batch,
                                              jax.random.fold_in(rng, j))))
    order = np.argsort(np.concatenate([rows for rows, _ in parts]))
    embeddings = {k: jnp.concatenate([out[k] for _, out in parts])[order] for k in parts[0][1]}
    return trainer.embeddings_loss(loss_fn, embeddings, batch)

  expected = _run(mesh, rules, jax.value_and_grad(reference, has_aux=True), params, batch, rng)
  cached = _run(mesh, rules, functools.partial(
      trainer.grad_cache_loss_and_grad, model, loss_fn, chunk_size=chunk), params, batch, rng)
  plain = _run(mesh, rules, jax.value_and_grad(
      functools.partial(trainer.batch_loss, model, loss_fn), has_aux=True), params, batch, rng)
  np.testing.assert_allclose(cached[0][0], expected[0][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max()), cached[1], expected[1])
  difference = jax.tree.map(lambda a, b: np.abs(a - b).max() / np.abs(b).max(),
                            plain[1], expected[1])
  assert max(jax.tree.leaves(difference)) > 1e-2


@pytest.mark.slow  # its gradients are checked equal above; this runs them through the step
def test_train_step_with_grad_cache_matches_the_plain_step():
  """A compiled, sharded step (an Adafactor update) with GRAD_CACHE_CHUNK and without."""
  mesh = partitioning.create_mesh(num_partitions=2)
  model = _model()
  rules = partitioning.standard_logical_axis_rules()
  schedule = optimizers.linear_decay_schedule(1e-2, 100)
  optimizer = optimizers.adafactor(schedule)
  loss_fn = losses.sharded_contrastive_loss(mesh, temperature=0.05)
  example = trainer.example_batch(BATCH, LENGTHS, NEGATIVES)
  results = []
  for chunk in (None, 4):
    state, shardings = trainer.create_train_state(model, optimizer, jax.random.key(0), example,
                                                  mesh, rules)
    step = trainer.compile_train_step(
        trainer.make_train_step(model, optimizer, loss_fn, schedule, grad_cache_chunk=chunk),
        shardings, mesh, rules)
    state, metrics = step(state, {k: jnp.asarray(v) for k, v in _batch().items()})
    results.append(jax.device_get((state.params, metrics)))
  (plain_params, plain_metrics), (params, metrics) = results
  assert set(metrics) == set(plain_metrics)
  for key, value in plain_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params, plain_params)


def test_activation_memory_is_one_chunk():
  """The compiler's temporary memory (exact) of a step on one device: with 8 chunks it is a
  small part of the plain step's, whose activations grow with the batch."""
  mesh = partitioning.create_mesh(devices=jax.devices()[:1])
  model = dual_encoder.DualEncoder(
      t5.T5Config(vocab_size=64, d_model=32, d_ff=64, num_heads=4, head_dim=8, num_layers=2),
      "sde", embedding_dim=8)
  rules = partitioning.standard_logical_axis_rules()
  optimizer = optimizers.adafactor(1e-3)
  lengths = {"queries": 32, "passages": 64}
  example = trainer.example_batch(256, lengths)
  state, shardings = trainer.create_train_state(model, optimizer, jax.random.key(0), example,
                                                mesh, rules, abstract=True)
  loss_fn = losses.sharded_contrastive_loss(mesh)
  temp = {}
  for chunk in (None, 32):
    step = trainer.make_train_step(model, optimizer, loss_fn, lambda _: 1e-3,
                                   grad_cache_chunk=chunk)
    with jax.set_mesh(mesh):
      compiled = jax.jit(step).lower(state, example).compile()
    temp[chunk] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[32] < temp[None] / 4, temp


@pytest.mark.parametrize("chunk", [0, 5, 32, 4.0])
def test_a_chunk_that_does_not_divide_the_batch_names_the_macro(chunk):
  with pytest.raises(ValueError, match="GRAD_CACHE_CHUNK"):
    trainer.grad_cache_loss_and_grad(_model(), None, None, _batch(), jax.random.key(0), chunk)
