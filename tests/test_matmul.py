"""The dense layers' bfloat16 product (samtone_jax/matmul.py) and its custom gradient against
the same products written out in float64 numpy from the bfloat16-rounded operands."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from samtone_jax import matmul, partitioning

# bfloat16 keeps 8 significant bits: each result, rounded once, is within 2^-8 of itself, so
# within 2^-8 of the reference's largest entry; twice that leaves room for the float32 sums.
RTOL_OF_MAX = 2 ** -7


def _operands(tokens, n, features, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(tokens, n)).astype(np.float32)
  kernel = (rng.normal(size=(n, features)) / np.sqrt(n)).astype(np.float32)
  grad = rng.normal(size=(tokens, features)).astype(np.float32)
  return x, kernel, grad


def _rounded(a):
  return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)


def _value_and_grads(x, kernel, grad):
  """(x @ kernel, d x, d kernel) of matmul in bfloat16 for the output gradient `grad`."""
  y, vjp = jax.vjp(lambda x, k: matmul.matmul(x, k, jnp.bfloat16), x, kernel)
  d_x, d_kernel = vjp(grad.astype(jnp.bfloat16))
  return y, d_x, d_kernel


def _assert_close(ours, reference):
  ours = np.asarray(jnp.asarray(ours).astype(jnp.float32), np.float64)
  assert ours.shape == reference.shape
  np.testing.assert_allclose(ours, reference, atol=RTOL_OF_MAX * np.abs(reference).max(),
                             rtol=0)


# Features at most half the inputs (the MLP's output layer: the output gradient is the
# transposed operand of the kernel's gradient) and more (the activations are).
@pytest.mark.parametrize("n, features", [(48, 16), (16, 40)])
def test_bfloat16_product_and_gradients_equal_float64(n, features):
  x, kernel, grad = _operands(96, n, features)
  y, d_x, d_kernel = jax.jit(_value_and_grads)(x, kernel, grad)
  assert y.dtype == jnp.bfloat16  # the gradients take their inputs' float32 dtype
  xr, kr, gr = _rounded(x), _rounded(kernel), _rounded(grad)
  _assert_close(y, xr @ kr)
  _assert_close(d_x, gr @ kr.T)
  _assert_close(d_kernel, xr.T @ gr)


def test_float32_is_the_plain_product():
  x, kernel, grad = _operands(32, 24, 8)
  y, vjp = jax.vjp(lambda x, k: matmul.matmul(x, k, jnp.float32), x, kernel)
  d_x, d_kernel = vjp(grad)
  np.testing.assert_allclose(y, x @ kernel, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_x, grad @ kernel.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d_kernel, x.T @ grad, rtol=1e-4, atol=1e-4)


def test_sharded_tokens_give_the_same_gradients():
  """On 8 devices, tokens split over "data" and features over "model", as the encoder's
  activations are: the same results as on one device (the padded transposed copy does not
  pad a sharded axis into wrong values)."""
  x, kernel, grad = _operands(64, 32, 24)
  single = jax.jit(_value_and_grads)(x, kernel, grad)
  mesh = partitioning.create_mesh(num_partitions=2)
  put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
  with jax.set_mesh(mesh):
    sharded = jax.jit(_value_and_grads)(put(x, P("data", "model")), put(kernel, P("model")),
                                        put(grad, P("data", "model")))
  for ours, reference in zip(sharded, single):
    np.testing.assert_allclose(np.asarray(ours.astype(jnp.float32)),
                               np.asarray(reference.astype(jnp.float32)),
                               atol=RTOL_OF_MAX * float(jnp.abs(reference).max()), rtol=0)
