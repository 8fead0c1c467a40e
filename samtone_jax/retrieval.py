"""Exact top-k retrieval by blocked matrix products, on one device or over a mesh.

The corpus is scored block by block and a running top-k is merged, so memory is
O(block x queries + k x queries), never queries x corpus. Over a mesh, the corpus is split
over the data axes: each device scores its shard the same way, and the devices' top-k lists
are gathered and merged. Ties are broken by document index (the lower first), everywhere:
`lax.top_k` keeps the earlier of equal values, and every merge puts earlier documents first.
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec

Array = jax.Array


def _scan_top_k(queries: Array, corpus: Array, valid: Array, offset: Array, k: int,
                block_size: int) -> tuple[Array, Array]:
  """Top-k of a corpus in blocks: [Q, d], [N, d] (N % block_size == 0), [N] bool -> [Q, k]
  scores (float32) and global indices (offset + position; -1 where fewer than k)."""
  num_queries = queries.shape[0]
  blocks = corpus.reshape(-1, block_size, corpus.shape[-1])
  valid = valid.reshape(-1, block_size)

  def merge(carry, block):
    top_scores, top_indices = carry
    block_corpus, block_valid, start = block
    scores = jnp.einsum("qd,nd->qn", queries, block_corpus, precision=lax.Precision.HIGHEST,
                        preferred_element_type=jnp.float32)  # [Q, block]
    scores = jnp.where(block_valid[None, :], scores, -jnp.inf)
    indices = jnp.broadcast_to(start + jnp.arange(block_size, dtype=jnp.int32),
                               (num_queries, block_size))
    # Earlier documents first, so that equal scores keep the lower index.
    scores, picked = lax.top_k(jnp.concatenate([top_scores, scores], axis=1), k)
    indices = jnp.take_along_axis(jnp.concatenate([top_indices, indices], axis=1), picked,
                                  axis=1)
    return (scores, indices), None

  init = (jnp.full((num_queries, k), -jnp.inf, jnp.float32),
          jnp.full((num_queries, k), -1, jnp.int32))
  starts = offset + block_size * jnp.arange(blocks.shape[0], dtype=jnp.int32)
  (scores, indices), _ = lax.scan(merge, init, (blocks, valid, starts))
  return scores, jnp.where(jnp.isfinite(scores), indices, -1)


def _pad(corpus: Array, multiple: int) -> tuple[Array, Array]:
  """Pads the corpus rows to a multiple; returns it and the [N'] mask of real rows."""
  n = corpus.shape[0]
  padded = math.ceil(n / multiple) * multiple
  valid = jnp.arange(padded) < n
  return jnp.pad(corpus, ((0, padded - n), (0, 0))), valid


@functools.partial(jax.jit, static_argnames=("k", "block_size"))
def top_k(queries: Array, corpus: Array, k: int, block_size: int = 4096
          ) -> tuple[Array, Array]:
  """Exact top-k of dot-product scores.

  Args:
    queries: [Q, d] query embeddings.
    corpus: [N, d] document embeddings.
    k: results a query (k <= N).
    block_size: documents scored at a time.

  Returns:
    (scores [Q, k] float32, indices [Q, k] int32 into the corpus), best first; equal scores
    in increasing document index.
  """
  if not 0 < k <= corpus.shape[0]:
    raise ValueError(f"k={k} must be in [1, {corpus.shape[0]}] (the corpus size).")
  block_size = min(block_size, corpus.shape[0])
  corpus, valid = _pad(corpus, block_size)
  return _scan_top_k(queries.astype(jnp.float32), corpus.astype(jnp.float32), valid,
                     jnp.int32(0), k, block_size)


def sharded_top_k(mesh: Mesh, queries: Array, corpus: Array, k: int, block_size: int = 4096,
                  data_axes: Sequence[str] = ("data",)) -> tuple[Array, Array]:
  """`top_k` with the corpus split over the mesh's data axes (queries replicated).

  Each device finds the top-k of its shard in blocks; the [devices, Q, k] lists are
  gathered and merged. Same results as `top_k`, ties included.
  """
  data_axes = tuple(data_axes)
  shards = math.prod(mesh.shape[a] for a in data_axes)
  n = corpus.shape[0]
  if not 0 < k <= n:
    raise ValueError(f"k={k} must be in [1, {n}] (the corpus size).")
  shard_rows = math.ceil(n / shards)
  block_size = min(block_size, shard_rows)
  corpus, valid = _pad(corpus.astype(jnp.float32),
                       shards * math.ceil(shard_rows / block_size) * block_size)
  rows = corpus.shape[0] // shards
  local_k = min(k, rows)

  def per_device(queries, corpus, valid):
    offset = lax.axis_index(data_axes) * rows
    scores, indices = _scan_top_k(queries, corpus, valid, offset.astype(jnp.int32), local_k,
                                  block_size)
    gather = functools.partial(lax.all_gather, axis_name=data_axes, axis=1, tiled=True)
    scores, picked = lax.top_k(gather(scores), k)  # shard by shard: lower indices first
    return scores, jnp.take_along_axis(gather(indices), picked, axis=1)

  batch = PartitionSpec(data_axes)
  return jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(PartitionSpec(), batch, batch),
                               out_specs=(PartitionSpec(), PartitionSpec()),
                               check_vma=False))(queries.astype(jnp.float32), corpus, valid)
