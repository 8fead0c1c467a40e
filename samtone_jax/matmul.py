"""The dense layers' matrix product in low precision: bfloat16 operands, float32 accumulation.

`matmul(x, kernel, dtype)` is `x @ kernel` in `dtype`. In float32, and on GPU and TPU (whose
matrix units accumulate bfloat16 products in float32 anyway), it is the plain product. In
bfloat16 on a CPU it is a custom-gradient product whose three matrix products (the forward,
the input gradient and the kernel gradient) each take bfloat16 operands and give a float32
result, because that is the only bfloat16 product that XLA:CPU runs on its fast kernels
(YNNPACK; twice the float32 rate on this project's AVX512-BF16 CPU). XLA:CPU computes
any other bfloat16 product, bfloat16 output or transposed left operand, by converting both
operands to float32 first: slower than float32 itself. Two rules follow:
- every product asks for a float32 result (`preferred_element_type`) and rounds it once;
- the kernel gradient, a contraction over tokens, needs one operand transposed into
  row-major [width, tokens]. The copy costs time, so it is the activations', which XLA
  copies once for all the products that read them (query, key and value; the MLP's two
  inputs), unless the output gradient is at most half as wide (the MLP's output layer).
  XLA folds a plain transpose back into the product (and then runs it slowly), so the
  transposed copy carries one extra zero row, sliced off the result.

These are XLA:CPU's rules as of jax 0.10 (`IsDotSupportedByYnn` in XLA's
backends/cpu/ynn_support.cc); `benchmarks/train_throughput.py --dtype bfloat16
--with_float32` measures what they are worth. Numerics are those of bfloat16 autodiff: the
incoming gradient is bfloat16 (the forward's output is), the products accumulate in float32
and round once.
"""

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def matmul(x: Array, kernel: Array, dtype) -> Array:
  """[tokens, n] x [n, features] -> [tokens, features] in `dtype`."""
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if jnp.dtype(dtype) != jnp.bfloat16 or jax.default_backend() != "cpu":
    return jnp.dot(x, kernel)
  return _bf16_matmul(x, kernel)


def _product(a: Array, b: Array, contract: tuple[int, int]) -> Array:
  """A bfloat16 product accumulated and returned in float32; `contract`: (a's axis, b's)."""
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                         preferred_element_type=jnp.float32)


@jax.custom_vjp
def _bf16_matmul(x: Array, kernel: Array) -> Array:
  """[T, n] x [n, f] -> [T, f], all bfloat16."""
  return _product(x, kernel, (1, 0)).astype(x.dtype)


def _forward(x, kernel):
  return _bf16_matmul(x, kernel), (x, kernel)


def _backward(residuals, grad):
  """grad [T, f] bfloat16 -> (d x [T, n], d kernel [n, f])."""
  x, kernel = residuals
  grad = grad.astype(x.dtype)
  d_x = _product(grad, kernel, (1, 1))  # [T, f] x [n, f]^T
  # The zero row (sliced off) stops XLA from folding the transpose into the product.
  transposed = lambda a: jnp.pad(a.T, ((0, 1), (0, 0)))
  if 2 * grad.shape[1] <= x.shape[1]:
    d_kernel = _product(transposed(grad), x, (1, 0))[:-1].T  # [f + 1, T] x [T, n]
  else:
    d_kernel = _product(transposed(x), grad, (1, 0))[:-1]  # [n + 1, T] x [T, f]
  return d_x.astype(x.dtype), d_kernel.astype(kernel.dtype)


_bf16_matmul.defvjp(_forward, _backward)
