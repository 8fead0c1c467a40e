"""sharded_contrastive_loss equals contrastive_loss on the global batch, value and gradients,
on 8 simulated CPU devices (tests/conftest.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from samtone_jax import losses

BATCH = 24  # not a power of two: 3 rows a device on 8 devices, 6 on 4.

CASES = [
    dict(same_tower="none"),
    dict(same_tower="query"),
    dict(same_tower="document"),
    dict(same_tower="both", pair_alpha=0.1),
    dict(same_tower="query", bidirectional=False, pair_alpha=0.1),
    dict(same_tower="both", negatives=2, ids=True),
    dict(same_tower="none", pair_alpha=0.1, negatives=1, ids=True),
]


def _mesh(shape, names, axis_type=AxisType.Auto):
  return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))


def _arrays(negatives=0, ids=False, seed=0, batch=BATCH, dim=8):
  rng = np.random.default_rng(seed)
  unit = lambda *s: (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True))(
      rng.normal(size=s)).astype(np.float32)
  arrays = dict(query_emb=unit(batch, dim), passage_emb=unit(batch, dim))
  if negatives:
    arrays["negative_emb"] = unit(batch, negatives, dim)
  if ids:
    arrays["query_ids"] = rng.integers(0, 6, batch).astype(np.int32)
    arrays["passage_ids"] = rng.integers(0, 6, batch).astype(np.int32)
    if negatives:  # -1: an empty slot; else a passage id (a known positive of some rows)
      arrays["negative_ids"] = rng.integers(-1, 6, (batch, negatives)).astype(np.int32)
  return {k: jnp.asarray(v) for k, v in arrays.items()}


def _value_and_grads(loss_fn, arrays):
  floats = {k: v for k, v in arrays.items() if k.endswith("_emb")}
  ints = {k: v for k, v in arrays.items() if k.endswith("_ids")}

  def loss(floats):
    return loss_fn(floats.pop("query_emb"), floats.pop("passage_emb"), **floats, **ints)

  return jax.value_and_grad(loss, has_aux=True)(dict(floats))


def _assert_same(got, want):
  (loss, metrics), grads = got
  (want_loss, want_metrics), want_grads = want
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
  assert metrics.keys() == want_metrics.keys()
  for k in metrics:
    np.testing.assert_allclose(metrics[k], want_metrics[k], rtol=1e-5, atol=1e-5, err_msg=k)
  for k in grads:
    np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("mesh_shape, names", [((8,), ("data",)), ((4, 2), ("data", "model"))],
                         ids=["data8", "data4xmodel2"])
def test_sharded_equals_global(case, mesh_shape, names):
  case = dict(case)
  arrays = _arrays(case.pop("negatives", 0), case.pop("ids", False))
  options = dict(temperature=0.05, **case)
  mesh = _mesh(mesh_shape, names)
  sharded = losses.sharded_contrastive_loss(mesh, ("data",), **options)
  batch_sharding = NamedSharding(mesh, P("data"))
  arrays_on_mesh = {k: jax.device_put(v, batch_sharding) for k, v in arrays.items()}
  got = jax.jit(functools.partial(_value_and_grads, sharded))(arrays_on_mesh)
  want = _value_and_grads(functools.partial(losses.contrastive_loss, **options), arrays)
  _assert_same(got, want)
  # The gradients keep the batch sharding: each device holds its own rows.
  assert got[1]["query_emb"].sharding.spec == P("data")


@pytest.mark.slow  # eager, op by op; the same semantics run under jit in the tests above
def test_sharded_without_jit_and_unsharded_inputs():
  arrays = _arrays(negatives=1, ids=True)
  mesh = _mesh((8,), ("data",))
  sharded = losses.sharded_contrastive_loss(mesh, temperature=0.01)
  _assert_same(_value_and_grads(sharded, arrays),
               _value_and_grads(functools.partial(losses.contrastive_loss, temperature=0.01),
                                arrays))


def test_two_data_axes():
  """Batch split over ("replica", "data"), with a model axis holding replicas."""
  arrays = _arrays(ids=True)
  mesh = _mesh((2, 2, 2), ("replica", "data", "model"))
  sharded = losses.sharded_contrastive_loss(mesh, ("replica", "data"), same_tower="both")
  got = jax.jit(functools.partial(_value_and_grads, sharded))(arrays)
  _assert_same(got, _value_and_grads(
      functools.partial(losses.contrastive_loss, same_tower="both"), arrays))


def test_explicit_axis_types():
  """A mesh with explicit sharding (jax's default axis type) works inside jax.set_mesh."""
  arrays = _arrays(negatives=2)
  mesh = _mesh((4, 2), ("data", "model"), AxisType.Explicit)
  sharded = losses.sharded_contrastive_loss(mesh, same_tower="query", pair_alpha=0.1)
  with jax.set_mesh(mesh):
    got = jax.jit(functools.partial(_value_and_grads, sharded))(arrays)
  _assert_same(got, _value_and_grads(
      functools.partial(losses.contrastive_loss, same_tower="query", pair_alpha=0.1), arrays))


def test_each_device_computes_only_its_rows():
  """The compiled program holds [B/n, B] logits per direction, never [B, B]."""
  batch = 64
  arrays = _arrays(batch=batch, dim=16)
  mesh = _mesh((8,), ("data",))
  sharded = losses.sharded_contrastive_loss(mesh, same_tower="both")
  hlo = jax.jit(functools.partial(_value_and_grads, sharded)).lower(arrays).compile().as_text()
  assert f"f32[{batch // 8},{batch}]" in hlo
  assert f"[{batch},{batch}]" not in hlo


def test_batch_not_divisible_is_a_clear_error():
  mesh = _mesh((8,), ("data",))
  sharded = losses.sharded_contrastive_loss(mesh)
  arrays = _arrays(batch=20)
  with pytest.raises(ValueError, match="20 examples does not split evenly over the 8 devices"):
    sharded(arrays["query_emb"], arrays["passage_emb"])


def test_bad_options_and_axes():
  mesh = _mesh((8,), ("data",))
  with pytest.raises(ValueError, match="temperature"):
    losses.sharded_contrastive_loss(mesh, temperature=0)
  with pytest.raises(ValueError, match="same_tower"):
    losses.sharded_contrastive_loss(mesh, same_tower="queries")
  with pytest.raises(ValueError, match="unknown options"):
    losses.sharded_contrastive_loss(mesh, temprature=0.1)
  with pytest.raises(ValueError, match="data_axes"):
    losses.sharded_contrastive_loss(mesh, ("batch",))
