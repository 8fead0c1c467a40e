"""Corpus-level retrieval: encode texts, exact top-k by blocked matrix products, metrics.

The corpus is scored block by block and a running top-k is merged, so memory is
O(block x queries + k x queries), never queries x corpus. Over a mesh, the corpus is split
over the data axes: each device scores its shard the same way, and the devices' top-k lists
are gathered and merged. Ties are broken by document index (the lower first), everywhere:
`lax.top_k` keeps the earlier of equal values, and every merge puts earlier documents first.
"""

import functools
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from samtone_jax import data_files, embedding_shards
from samtone_jax import metrics as metrics_lib

Array = jax.Array
# Documents scored at a time: [Q, 8192] scores. Fewer blocks merge faster (lax.top_k's cost
# grows less than the block); 8192 scans 6% faster than 4096 on a 2-core CPU.
BLOCK_SIZE = 8192
# A block scores [Q, block]; once the running top-k is full, few of them beat it. A block
# whose queries each have at most FEW runs of GROUP documents above their k-th score merges
# only those runs, picked by their maxima (lax.top_k's time grows with its input and k): 7%
# faster at 1M x 768 on a 2-core CPU.
GROUP = 8
FEW = 16
# Queries searched at a time: [4096, BLOCK_SIZE] float32 scores are 128 MiB a device.
QUERY_BATCH = 4096


def _merged(top_scores: Array, top_indices: Array, scores: Array, indices: Array, k: int
            ) -> tuple[Array, Array]:
  """The top-k of a running top-k ([Q, k]) and new candidates ([Q, n], later documents in
  increasing index): the running ones first, so that equal scores keep the lower index."""
  scores, picked = lax.top_k(jnp.concatenate([top_scores, scores], axis=1), k)
  return scores, jnp.take_along_axis(jnp.concatenate([top_indices, indices], axis=1), picked,
                                     axis=1)


def _group_max(scores: Array) -> Array:
  """[Q, n] -> [Q, ceil(n / GROUP)]: the best score of each run of GROUP documents."""
  whole = scores.shape[1] // GROUP * GROUP
  groups = scores[:, :whole].reshape(scores.shape[0], -1, GROUP).max(axis=2)
  if whole == scores.shape[1]:
    return groups
  return jnp.concatenate([groups, scores[:, whole:].max(axis=1, keepdims=True)], axis=1)


def _scan_top_k(queries: Array, corpus: Array, valid: Array, offset: Array, floor: Array,
                k: int, block_size: int) -> tuple[Array, Array]:
  """Top-k of a corpus in blocks: [Q, d], [N, d] (N % block_size == 0), [N] bool, [Q]
  scores that no result can equal or beat (-inf: none) -> [Q, k] scores (float32) and
  global indices (offset + position; -1 where fewer than k).

  A block's documents can enter the running top-k only above the query's floor: its running
  k-th score, or the given one if higher. When no query has more than FEW groups of GROUP
  documents with a score above it, only its FEW best groups are merged, in document order
  (lax.top_k's time grows with its input): exact, ties included. Any other block is merged
  whole.
  """
  num_queries = queries.shape[0]
  blocks = corpus.reshape(-1, block_size, corpus.shape[-1])
  valid = valid.reshape(-1, block_size)
  few = min(FEW, -(-block_size // GROUP))

  def merge(carry, block):
    top_scores, top_indices = carry
    block_corpus, block_valid, start = block
    scores = jnp.einsum("qd,nd->qn", queries, block_corpus, precision=lax.Precision.HIGHEST,
                        preferred_element_type=jnp.float32)  # [Q, block]
    scores = jnp.where(block_valid[None, :], scores, -jnp.inf)
    groups = _group_max(scores)  # [Q, G]
    above = jnp.sum(groups > jnp.maximum(floor, top_scores[:, -1])[:, None], axis=1)

    def whole(scores):
      indices = jnp.broadcast_to(start + jnp.arange(block_size, dtype=jnp.int32),
                                 scores.shape)
      return _merged(top_scores, top_indices, scores, indices, k)

    def best_groups(scores):
      chosen = jnp.sort(lax.top_k(groups, few)[1], axis=1)  # [Q, few], in document order
      positions = (chosen[:, :, None] * GROUP
                   + jnp.arange(GROUP, dtype=jnp.int32)).reshape(num_queries, -1)
      picked = jnp.take_along_axis(scores, jnp.minimum(positions, block_size - 1), axis=1)
      picked = jnp.where(positions < block_size, picked, -jnp.inf)
      return _merged(top_scores, top_indices, picked, start + positions, k)

    return lax.cond(jnp.max(above) <= few, best_groups, whole, scores), None

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
def top_k(queries: Array, corpus: Array, k: int, block_size: int = BLOCK_SIZE
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
  floor = jnp.full(queries.shape[:1], -jnp.inf, jnp.float32)
  return _scan_top_k(queries.astype(jnp.float32), corpus.astype(jnp.float32), valid,
                     jnp.int32(0), floor, k, block_size)


def sharded_top_k(mesh: Mesh, queries: Any, corpus: Any, k: int,
                  block_size: int = BLOCK_SIZE, data_axes: Sequence[str] = ("data",),
                  chunk_rows: Optional[int] = None, query_batch: int = QUERY_BATCH
                  ) -> tuple[np.ndarray, np.ndarray]:
  """`top_k` with the corpus split over the mesh's data axes (queries replicated), streamed
  through the devices `chunk_rows` documents at a time, the queries `query_batch` at a time.

  Each chunk is read once and split over the devices; every batch of queries is searched
  against it in turn: each device finds the top-k of its part in blocks, above the k-th
  score of the earlier chunks; the [devices, batch, k] lists are gathered and merged with
  the batch's running top-k of the earlier chunks. The corpus (on disk, it may be) is read
  once, rather than once a query batch; the price is the running top-k of every query,
  [Q, k] on each device and the host (500k queries x 30: 120 MB), and the queries sent to the
  devices once a chunk. Same results as `top_k`, ties included, whatever the batch. Device
  memory is O(chunk + block x batch + k x Q) and host memory O(chunk + (d + k) x Q),
  whatever N.

  Args:
    mesh, k, block_size: as `top_k`, over the mesh.
    queries: [Q, d] query embeddings: an array, or anything read as one by `len(queries)`
      and `queries[start:stop]`.
    corpus: [N, d]: an array, or anything read as one by `len(corpus)` and
      `corpus[start:stop]` (e.g. `embedding_shards.EmbeddingShards` on disk).
    data_axes: the mesh axes the corpus is split over.
    chunk_rows: documents a chunk (None: all of them at once).
    query_batch: queries searched at a time: the devices score [query_batch, block_size]
      at once.

  Returns:
    (scores [Q, k] float32, indices [Q, k] int32) as `top_k`'s, on the host of every
    process.
  """
  data_axes = tuple(data_axes)
  devices = math.prod(mesh.shape[a] for a in data_axes)
  n = len(corpus)
  if not 0 < k <= n:
    raise ValueError(f"k={k} must be in [1, {n}] (the corpus size).")
  if query_batch < 1:
    raise ValueError(f"query_batch={query_batch} must be >= 1.")
  chunk = n if chunk_rows is None else min(chunk_rows, n)
  block_size, rows = chunk_layout(chunk, devices, block_size)
  step = _chunk_step(mesh, data_axes, k, min(k, rows), block_size, rows)
  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec(data_axes))
  num_queries = len(queries)
  batch = max(1, min(query_batch, num_queries))  # every batch of this size: one compile
  starts = range(0, num_queries, batch)
  tops = [(_put(np.full((batch, k), -np.inf, np.float32), replicated),
           _put(np.full((batch, k), -1, np.int32), replicated)) for _ in starts]
  for start in range(0, n, chunk):
    block = _padded(corpus[start:start + chunk], devices * rows)
    valid = np.arange(devices * rows) < min(chunk, n - start)
    block, valid = _put(block, split), _put(valid, split)
    for b, first in enumerate(starts):
      part = np.asarray(queries[first:first + batch], np.float32)
      part = np.pad(part, ((0, batch - len(part)), (0, 0)))  # the last batch's empty rows
      tops[b] = step(_put(part, replicated), block, valid, np.int32(start), *tops[b])
  scores, indices = (  # replicated: any device's copy; the last batch's padding dropped
      np.concatenate([np.asarray(top[i].addressable_data(0)) for top in tops]
                     or [np.zeros((0, k), dtype)])[:num_queries]
      for i, dtype in enumerate((np.float32, np.int32)))
  return scores, np.where(np.isfinite(scores), indices, -1)


def chunk_layout(chunk: int, devices: int, block_size: int) -> tuple[int, int]:
  """(block size, rows a device) of a chunk of `chunk` documents over `devices`: a device's
  part in blocks of at most `block_size`, as even as they can be, so that a whole chunk
  needs no padding when the devices divide it."""
  blocks = math.ceil(chunk / devices / block_size)
  block_size = math.ceil(chunk / devices / blocks)
  return block_size, blocks * block_size


def _padded(part: Any, rows: int) -> np.ndarray:
  """`part` ([r, d], r <= rows) as float32 [rows, d] in a host buffer that JAX's CPU backend
  uses without a copy (`embedding_shards.host_buffer`), zero rows after it."""
  part = np.asarray(part, np.float32)
  if (len(part) == rows and part.flags.c_contiguous
      and part.ctypes.data % embedding_shards.ALIGNMENT == 0):
    return part
  out = embedding_shards.host_buffer(rows, part.shape[1])
  out[:len(part)], out[len(part):] = part, 0
  return out


def _put(value: np.ndarray, sharding: NamedSharding) -> Array:
  """A host array as a global array of `sharding` (each process holds all of `value`)."""
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


@functools.lru_cache(maxsize=16)
def _chunk_step(mesh: Mesh, data_axes: tuple[str, ...], k: int, local_k: int,
                block_size: int, rows: int) -> Callable:
  """The jitted merge of one chunk into the running top-k: (queries [Q, d], chunk
  [devices * rows, d], valid [devices * rows], start, scores [Q, k], indices [Q, k]) ->
  (scores, indices)."""

  def per_device(queries, corpus, valid, start, floor):
    offset = start + lax.axis_index(data_axes).astype(jnp.int32) * rows
    scores, indices = _scan_top_k(queries, corpus, valid, offset, floor, local_k, block_size)
    gather = functools.partial(lax.all_gather, axis_name=data_axes, axis=1, tiled=True)
    return gather(scores), gather(indices)  # device by device: lower indices first

  split, replicated = PartitionSpec(data_axes), PartitionSpec()
  chunk_top_k = jax.shard_map(per_device, mesh=mesh,
                              in_specs=(replicated, split, split, replicated, replicated),
                              out_specs=(replicated, replicated), check_vma=False)

  @jax.jit
  def step(queries, corpus, valid, start, top_scores, top_indices):
    # No document of this chunk can enter at or below the k-th score of the earlier ones.
    scores, indices = chunk_top_k(queries, corpus, valid, start, top_scores[:, -1])
    return _merged(top_scores, top_indices, scores, indices, k)

  return step


def tokenize(texts: Sequence[str], vocabulary, length: int) -> np.ndarray:
  """Token ids [len(texts), length] int32: each text cut to length - 1 tokens, then EOS,
  then 0-padded (as the training tasks feed them)."""
  out = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    tokens = list(vocabulary.encode(text))[:length - 1] + [vocabulary.eos_id]
    out[row, :len(tokens)] = tokens
  return out


class Tokenized:
  """Texts read as their token ids, [N, L] int32, tokenised a slice at a time (as `tokenize`):
  `len()` and `[a:b]`, so that `encode` never holds the token ids of all of them."""

  def __init__(self, texts: Sequence[str], vocabulary, length: int):
    self.texts, self.vocabulary, self.length = texts, vocabulary, length

  def __len__(self) -> int:
    return len(self.texts)

  def __getitem__(self, rows: slice) -> np.ndarray:
    return tokenize(self.texts[rows], self.vocabulary, self.length)


def encode(embed: Callable[[Any, Array], Array], params: Any, token_ids: Any,
           mesh: Mesh, batch_size: int, data_axes: Sequence[str] = ("data",)) -> np.ndarray:
  """Embeds token ids batch by batch, each batch split over the mesh's data axes.

  Args:
    embed: jit-able `(params, [b, L] int32) -> [b, E]`, e.g. a dual encoder's
      `encode_passages` through `model.apply`.
    params: its parameters (as sharded for training).
    token_ids: [N, L] int32, the same in every process: an array, or anything read as one
      by `len()` and `[a:b]` (`Tokenized`).
    mesh: the device mesh.
    batch_size: rows a batch (rounded up to a multiple of the data devices); the last batch
      is padded with empty rows, whose embeddings are dropped.

  Returns:
    [N, E] float32 embeddings, in every process.
  """
  devices = math.prod(mesh.shape[a] for a in data_axes)
  batch_size = math.ceil(batch_size / devices) * devices
  sharding = NamedSharding(mesh, PartitionSpec(tuple(data_axes)))
  jitted = jax.jit(embed)
  out = []
  for start in tqdm.tqdm(range(0, len(token_ids), batch_size), desc="encoding", unit="batch",
                         disable=len(token_ids) <= batch_size or jax.process_index() > 0):
    rows = token_ids[start:start + batch_size]
    batch = np.pad(rows, ((0, batch_size - len(rows)), (0, 0)))
    batch = jax.make_array_from_callback(batch.shape, sharding, lambda index: batch[index])
    embedded = multihost_utils.process_allgather(jitted(params, batch), tiled=True)
    out.append(np.asarray(embedded, np.float32)[:len(rows)])
  return np.concatenate(out)


def scored_run(eval_set: data_files.RetrievalSet, query_ids: Sequence[str],
               doc_ids: Sequence[str], scores: np.ndarray, indices: np.ndarray
               ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """(metrics, run) of a ranking: row r of scores / indices [Q, k] ranks `doc_ids` for
  `query_ids[r]`. Indices < 0 (none) and a document whose id is the query's are dropped,
  as BEIR does."""
  run = {qid: {doc_ids[j]: float(s) for s, j in zip(scores[row], indices[row])
               if j >= 0 and doc_ids[j] != qid}
         for row, qid in enumerate(query_ids)}
  return metrics_lib.compute_metrics(eval_set.qrels, run), run
