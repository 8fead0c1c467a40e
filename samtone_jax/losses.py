"""Contrastive losses for dual encoders: in-batch softmax, SamToNe and PAIR.

All losses are functions of L2-normalised embeddings. Notation (docs/design.md,
"The losses"): `q_i`, `p_i` are the query and positive passage of example i, `B` the
global batch, `s(a, b) = a . b` and `t` the temperature.

- In-batch softmax, query->passage, row i: `-log e^{s(q_i,p_i)/t} / sum_j e^{s(q_i,p_j)/t}`.
  Hard negatives `n` (all `B * k` of the global batch) join every query->passage row.
- Passage->query: the same with the roles swapped. Bidirectional: `L = L_qp + L_pq`.
- SamToNe (same tower negatives): the query->passage row i also sums `e^{s(q_i,q_j)/t}`
  over `j != i` ("query" side); the passage->query row i sums `e^{s(p_i,p_j)/t}` ("document").
- PAIR: the query->passage direction becomes `(1 - a) L_qp + a L_P`, where `L_P` contrasts
  `s(q_i, p_i)` with the passage-passage similarities `s(p_i, p_j)`, `j != i`.
- Duplicate masking, with content ids: in a cross-tower row i, item j != i is removed when
  `passage_id[j] == passage_id[i]` or `query_id[j] == query_id[i]`; in a same-tower sum, item
  j != i is removed when its id equals the anchor's. The positive is never removed.
- Hard negatives, with their ids: negative m is removed from query->passage row i when its
  id is < 0 (a slot with no negative: its example had fewer than k) or, given passage ids,
  when it is a known positive of the anchor: its id equals `passage_id[i]`, or `passage_id[j]`
  of an example j with `query_id[j] == query_id[i]`.

`contrastive_loss` works on whole (global) arrays. `sharded_contrastive_loss` computes the same
value under a device mesh, each device only its own rows. Both run `_loss_and_metrics` on a
block of rows (the whole batch is one block), so the two can differ only by the order of
float additions.

References:
  Moiseev et al., "SamToNe: Improving Contrastive Loss for Dual Encoder Retrieval Models
  with Same Tower Negatives", Findings of ACL 2023. https://arxiv.org/abs/2306.02516
  Ren et al., "PAIR: Leveraging Passage-Centric Similarity Relation for Improving Dense
  Passage Retrieval", Findings of ACL 2021. https://arxiv.org/abs/2108.06027
"""

import functools
import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

SAME_TOWER_OPTIONS = ("none", "query", "document", "both")

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]


def check_options(temperature, same_tower, bidirectional, pair_alpha):
  """Raises ValueError, naming the argument, for options outside their domain."""
  if (not isinstance(temperature, numbers.Real) or not temperature > 0
      or not math.isfinite(temperature)):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
  if same_tower not in SAME_TOWER_OPTIONS:
    raise ValueError(
        f"same_tower must be one of {SAME_TOWER_OPTIONS}, got {same_tower!r}.")
  if same_tower in ("document", "both") and not bidirectional:
    raise ValueError(
        f"same_tower={same_tower!r} needs bidirectional=True: document-side negatives join"
        " the passage->query direction, which bidirectional=False leaves out.")
  if not isinstance(pair_alpha, numbers.Real) or not 0.0 <= pair_alpha <= 1.0:
    raise ValueError(f"pair_alpha must be a number in [0, 1], got {pair_alpha!r}.")


def _check_inputs(query_emb, passage_emb, negative_emb, query_ids, passage_ids,
                  negative_ids=None):
  """Raises ValueError, naming the argument, for arrays of the wrong shape or dtype."""
  for name, x in (("query_emb", query_emb), ("passage_emb", passage_emb)):
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"{name} must be a floating [B, d] array, got {x.dtype}{list(x.shape)}.")
  if query_emb.shape != passage_emb.shape:
    raise ValueError(
        f"query_emb and passage_emb must have the same shape [B, d], got"
        f" {list(query_emb.shape)} and {list(passage_emb.shape)}.")
  batch, dim = query_emb.shape
  if batch == 0:
    raise ValueError("query_emb and passage_emb have an empty batch (B = 0).")
  if negative_emb is not None and (
      negative_emb.ndim != 3 or negative_emb.shape[0] != batch
      or negative_emb.shape[2] != dim
      or not jnp.issubdtype(negative_emb.dtype, jnp.floating)):
    raise ValueError(
        f"negative_emb must be a floating [B, k, d] = [{batch}, k, {dim}] array, got"
        f" {negative_emb.dtype}{list(negative_emb.shape)}.")
  for name, ids in (("query_ids", query_ids), ("passage_ids", passage_ids)):
    if ids is not None and (ids.shape != (batch,) or not jnp.issubdtype(ids.dtype, jnp.integer)):
      raise ValueError(f"{name} must be an integer [B] = [{batch}] array, got"
                       f" {ids.dtype}{list(ids.shape)}.")
  if negative_ids is not None and (
      negative_emb is None or negative_ids.shape != negative_emb.shape[:2]
      or not jnp.issubdtype(negative_ids.dtype, jnp.integer)):
    want = "no negative_emb" if negative_emb is None else list(negative_emb.shape[:2])
    raise ValueError(f"negative_ids must be an integer [B, k] array like negative_emb"
                     f" ({want}), got {negative_ids.dtype}{list(negative_ids.shape)}.")


def _masked_logsumexp(pieces: Sequence[tuple[Array, Optional[Array]]],
                      partial: Optional[tuple[Array, Array]] = None) -> Array:
  """log-sum-exp over the kept entries of several blocks of logits, row by row.

  Masked entries are excluded exactly: they become -inf before the exponential, so they add
  0 to the sum and receive a zero gradient. Each row must keep at least one term in all.

  Args:
    pieces: pairs `(logits [b, n_k], keep [b, n_k] bool or None)`; None keeps every entry.
    partial: optional `(max [b], sum [b])` of terms summed elsewhere: their log-sum-exp is
      `max + log(sum)`, with a finite max that carries no gradient.

  Returns:
    [b] float32.
  """
  masked = [x if keep is None else jnp.where(keep, x, -jnp.inf)
            for x, keep in pieces if x.shape[-1]]
  maxima = [jnp.max(x, axis=-1) for x in masked] + ([partial[0]] if partial else [])
  row_max = lax.stop_gradient(functools.reduce(jnp.maximum, maxima))
  total = sum(jnp.sum(jnp.exp(x - row_max[:, None]), axis=-1) for x in masked)
  if partial:
    total += partial[1] * jnp.exp(partial[0] - row_max)
  return row_max + jnp.log(total)


def _similarity(a: Array, b: Array) -> Array:
  """[n, d] x [m, d] -> [n, m] dot products in float32 at full matmul precision."""
  return jnp.einsum("nd,md->nm", a, b, precision=lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32)


def _pairs_in(a: Array, b: Array, set_a: Array, set_b: Array) -> Array:
  """[n] x [m] ids, [s] x [s] pairs -> [n, m] bool: whether (a[i], b[j]) is a pair of the set.

  Exact, in O(n m log s) time and O(n m) memory: a binary search of each pair among the
  set's pairs sorted lexicographically.
  """
  set_a, set_b = lax.sort((set_a, set_b), num_keys=2)
  size = set_a.shape[0]
  a, b = jnp.broadcast_arrays(a[:, None], b[None, :])
  lo, hi = jnp.zeros(a.shape, jnp.int32), jnp.full(a.shape, size, jnp.int32)
  for _ in range(size.bit_length()):  # invariant: the pair, if present, is in [lo, hi]
    mid = (lo + hi) // 2
    at_a, at_b = set_a[jnp.minimum(mid, size - 1)], set_b[jnp.minimum(mid, size - 1)]
    below = (mid < hi) & ((at_a < a) | ((at_a == a) & (at_b < b)))
    lo, hi = jnp.where(below, mid + 1, lo), jnp.where(below, hi, mid)
  at = jnp.minimum(lo, size - 1)
  return (lo < size) & (set_a[at] == a) & (set_b[at] == b)


class _Blocks(NamedTuple):
  """Where a block of rows sits in the global batch, and how to combine blocks.

  The single-device case is one block; under a mesh, each device holds one block.
  """
  offset: Any  # int scalar: global index of the block's first row.
  gather: Callable[[Array], Array]  # [b, ...] -> [B, ...]: every block's rows, in order.
  sum: Callable[[Any], Any]  # elementwise sum over blocks (of a pytree).
  max: Callable[[Array], Array]  # elementwise max over blocks.


_ONE_BLOCK = _Blocks(offset=0, gather=lambda x: x, sum=lambda x: x, max=lambda x: x)


def _loss_and_metrics(q_rows, p_rows, n_rows, qid_rows, pid_rows, nid_rows, blocks, *,
                      temperature, same_tower, bidirectional, pair_alpha):
  """The loss and metrics of the global batch, computed from one block of its rows.

  The block holds rows [offset, offset + b) of the global batch; `blocks` gathers the other
  towers' rows and sums the blocks' shares. Each block builds only its own [b, B] logits:
  query->passage rows (and same-tower rows) directly, and the passage->query rows as the
  columns of the query->passage logits of all blocks, reduced column by column.

  Args:
    q_rows, p_rows: [b, d] queries and positive passages of the block.
    n_rows: [b, k, d] hard negatives of the block, or None.
    qid_rows, pid_rows: [b] int content ids of the block's queries and passages, or None.
    nid_rows: [b, k] int content ids of the block's hard negatives (< 0: none), or None.
    blocks: a `_Blocks`.
    temperature, same_tower, bidirectional, pair_alpha: as in `contrastive_loss`.

  Returns:
    Dict of float32 scalars, the means over the global batch (see `contrastive_loss`).
  """
  q_rows, p_rows = q_rows.astype(jnp.float32), p_rows.astype(jnp.float32)
  query_side = same_tower in ("query", "both")
  document_side = same_tower in ("document", "both")
  t = temperature
  b = q_rows.shape[0]
  p_all = blocks.gather(p_rows)  # [B, d]
  batch = p_all.shape[0]
  positive = (blocks.offset + jnp.arange(b))[:, None] == jnp.arange(batch)[None, :]  # [b, B]

  def differs(ids_rows):  # [b, B]: True where item j's id differs from row i's.
    return ids_rows[:, None] != blocks.gather(ids_rows)[None, :]

  # Cross-tower: item j stays unless it is a known positive of the anchor (equal query or
  # passage id). The rule is symmetric in (i, j), so one mask serves both directions.
  # Same tower: j != i stays unless it is a copy of the anchor.
  id_differs = [differs(ids) for ids in (qid_rows, pid_rows) if ids is not None]
  keep_cross = functools.reduce(jnp.logical_and, id_differs) | positive if id_differs else None
  keep_qq = ~positive if qid_rows is None else ~positive & differs(qid_rows)
  keep_pp = ~positive if pid_rows is None else ~positive & differs(pid_rows)

  pos = jnp.sum(q_rows * p_rows, axis=-1) / t  # [b]: s(q_i, p_i) / t
  logits_qp = _similarity(q_rows, p_all) / t  # [b, B]: the block's rows of Q P^T / t
  kept_qp = logits_qp if keep_cross is None else jnp.where(keep_cross, logits_qp, -jnp.inf)

  # query -> passage, with hard negatives and same-tower (query) negatives.
  pieces = [(kept_qp, None)]
  if n_rows is not None:
    n_all = blocks.gather(n_rows.astype(jnp.float32)).reshape(-1, q_rows.shape[-1])
    logits_qn = _similarity(q_rows, n_all) / t  # [b, B * k]
    if nid_rows is not None:
      nid_all = blocks.gather(nid_rows).reshape(-1)  # [B * k]
      keep_qn = jnp.broadcast_to(nid_all >= 0, logits_qn.shape)
      if pid_rows is not None and qid_rows is not None:
        keep_qn &= ~_pairs_in(qid_rows, nid_all, blocks.gather(qid_rows),
                              blocks.gather(pid_rows))
      elif pid_rows is not None:
        keep_qn &= pid_rows[:, None] != nid_all[None, :]
      logits_qn = jnp.where(keep_qn, logits_qn, -jnp.inf)
    pieces.append((logits_qn, None))
  if query_side:
    logits_qq = _similarity(q_rows, blocks.gather(q_rows)) / t  # [b, B]
    pieces.append((logits_qq, keep_qq))
  loss_qp = _masked_logsumexp(pieces) - pos  # [b]
  # The positive's in-batch rank among passages and hard negatives, ties in its favour.
  above = jnp.sum((kept_qp > pos[:, None]) & ~positive, axis=-1)
  if n_rows is not None:
    above += jnp.sum(logits_qn > pos[:, None], axis=-1)
  out = dict(loss_qp=loss_qp, accuracy_qp=above == 0, mrr_qp=1.0 / (1.0 + above),
             pos_sim=pos * t)
  if nid_rows is not None:  # the share of slots without a negative (a short pool)
    out["empty_negatives"] = jnp.mean(nid_rows < 0, axis=-1)

  if pair_alpha > 0 or document_side:
    logits_pp = _similarity(p_rows, p_all) / t  # [b, B]
  loss = loss_qp
  if pair_alpha > 0:
    out["loss_pair"] = _masked_logsumexp([(pos[:, None], None), (logits_pp, keep_pp)]) - pos
    loss = (1.0 - pair_alpha) * loss_qp + pair_alpha * out["loss_pair"]

  if bidirectional:
    # passage -> query: row i of P Q^T is column i of Q P^T, spread over all blocks. Each
    # block reduces its rows per column; the reductions over blocks give every column's max
    # and sum of exp, of which this block takes its own b columns.
    mine = lambda column_values: lax.dynamic_slice_in_dim(column_values, blocks.offset, b)
    column_max = blocks.max(lax.stop_gradient(jnp.max(kept_qp, axis=0)))  # [B]
    column_sum = blocks.sum(jnp.sum(jnp.exp(kept_qp - column_max), axis=0))  # [B]
    pieces = [(logits_pp, keep_pp)] if document_side else []
    out["loss_pq"] = _masked_logsumexp(pieces, (mine(column_max), mine(column_sum))) - pos
    loss += out["loss_pq"]
    beaten_by = (kept_qp > blocks.gather(pos)[None, :]) & ~positive
    out["accuracy_pq"] = mine(blocks.sum(jnp.sum(beaten_by, axis=0))) == 0
  out["loss"] = loss
  shares = {k: jnp.sum(v.astype(jnp.float32)) / batch for k, v in out.items()}

  # Mean similarity over the B (B - 1) off-diagonal pairs, without a [b, B] matrix:
  # sum_{i in block} sum_{j != i} a_i . c_j = sum_i a_i . (sum_j c_j) - sum_i a_i . c_i.
  pairs = max(batch * (batch - 1), 1)
  q_sum, p_sum = blocks.sum((jnp.sum(q_rows, axis=0), jnp.sum(p_rows, axis=0)))
  def off_diagonal_share(a_rows, c_rows, c_sum):
    return (jnp.dot(jnp.sum(a_rows, axis=0), c_sum, precision=lax.Precision.HIGHEST)
            - jnp.sum(a_rows * c_rows)) / pairs
  shares["neg_sim"] = off_diagonal_share(q_rows, p_rows, p_sum)
  shares["qq_sim"] = off_diagonal_share(q_rows, q_rows, q_sum)
  shares["pp_sim"] = off_diagonal_share(p_rows, p_rows, p_sum)
  return blocks.sum(shares)


def contrastive_loss(
    query_emb: Array,
    passage_emb: Array,
    *,
    temperature: float = 0.01,
    same_tower: str = "query",
    bidirectional: bool = True,
    pair_alpha: float = 0.0,
    negative_emb: Optional[Array] = None,
    query_ids: Optional[Array] = None,
    passage_ids: Optional[Array] = None,
    negative_ids: Optional[Array] = None,
) -> tuple[Array, dict[str, Array]]:
  """In-batch softmax contrastive loss with optional same tower negatives (SamToNe) and PAIR.

  Single-device semantics on whole arrays: the batch here is the global batch. Under a mesh,
  use `sharded_contrastive_loss`, which returns the same value.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> p = jnp.array([[0.6, 0.8], [0.8, 0.6]])
    >>> loss, metrics = contrastive_loss(q, p, temperature=1.0, same_tower="none",
    ...                                  bidirectional=False)
    >>> print(f"{loss:.4f}")  # log(e^0.6 + e^0.8) - 0.6, twice, averaged
    0.7981

  Args:
    query_emb: [B, d] L2-normalised query embeddings (similarity is the dot product).
    passage_emb: [B, d] L2-normalised embeddings of each query's positive passage.
    temperature: t > 0, logits are s / t (the paper: 0.01).
    same_tower: "none" (in-batch softmax), "query" (SamToNe, the paper's default),
      "document" or "both": which same-tower similarities join the denominators.
    bidirectional: add the passage->query loss (the paper uses it throughout).
    pair_alpha: a in [0, 1]; a > 0 makes the query->passage term `(1-a) L_qp + a L_P` (PAIR,
      a = 0.1 in its paper).
    negative_emb: [B, k, d] hard negatives; all B * k join every query->passage row.
    query_ids: [B] int ids of the query texts (equal ids = equal texts), for masking.
    passage_ids: [B] int ids of the passage texts, for masking.
    negative_ids: [B, k] int ids of the hard negatives' texts: an id < 0 marks a slot
      without a negative (always removed); with `passage_ids`, a negative that is a known
      positive of the anchor is removed from its row.

  Returns:
    `(loss, metrics)`: the scalar float32 loss, and a dict of float32 scalars: `loss`,
    `loss_qp`, `loss_pq` (if bidirectional), `loss_pair` (if pair_alpha > 0), `accuracy_qp`
    and `mrr_qp` (in-batch rank of the positive among passages and hard negatives, ties in
    its favour), `accuracy_pq` (if bidirectional), `pos_sim` (mean s(q_i, p_i)), and the mean
    off-diagonal similarities `neg_sim` (q_i, p_j), `qq_sim` and `pp_sim`; with
    `negative_ids`, `empty_negatives`, the share of the B * k slots without a negative.

  Raises:
    ValueError: for a bad option or array, naming it.
  """
  check_options(temperature, same_tower, bidirectional, pair_alpha)
  _check_inputs(query_emb, passage_emb, negative_emb, query_ids, passage_ids, negative_ids)
  means = _loss_and_metrics(
      query_emb, passage_emb, negative_emb, query_ids, passage_ids, negative_ids, _ONE_BLOCK,
      temperature=temperature, same_tower=same_tower, bidirectional=bidirectional,
      pair_alpha=pair_alpha)
  return means["loss"], means


def sharded_contrastive_loss(mesh: Mesh, data_axes: Sequence[str] = ("data",),
                             **options) -> LossFn:
  """`contrastive_loss` over a batch split across the data axes of a device mesh.

  Each device all-gathers the small [B, d] embeddings (and ids, hard negatives) of the global
  batch and computes only its own rows: [B/n, B] logits per matrix, never [B, B]. Column
  reductions ([B] vectors) give the passage->query direction, and the rows' shares of the
  means are all-reduced. Value and gradients equal `contrastive_loss` on the global batch.
  Axes of the mesh outside `data_axes` (e.g. "model") hold replicas.

  The returned function takes global arrays (any sharding; under jit or not) and returns
  replicated scalars. On a mesh whose data axes are `AxisType.Explicit`, call it (or the
  jitted step that calls it) inside `jax.set_mesh(mesh)`.

  Args:
    mesh: the device mesh.
    data_axes: the mesh axes that the batch is split over, outermost first.
    **options: `temperature`, `same_tower`, `bidirectional`, `pair_alpha` of
      `contrastive_loss`.

  Returns:
    `loss_fn(query_emb, passage_emb, *, negative_emb=None, query_ids=None, passage_ids=None,
    negative_ids=None) -> (loss, metrics)` with the arrays and results of `contrastive_loss`.

  Raises:
    ValueError: for a bad option or an axis not in the mesh; the returned function raises it
      for bad arrays and for a global batch that the data axes do not divide.
  """
  defaults = dict(temperature=0.01, same_tower="query", bidirectional=True, pair_alpha=0.0)
  unknown = set(options) - set(defaults)
  if unknown:
    raise ValueError(f"unknown options {sorted(unknown)}; expected some of {sorted(defaults)}.")
  options = {**defaults, **options}
  check_options(**options)
  data_axes = tuple(data_axes)
  missing = [a for a in data_axes if a not in mesh.axis_names]
  if missing or not data_axes:
    raise ValueError(f"data_axes {data_axes} must be axes of the mesh {mesh.axis_names}.")
  num_shards = math.prod(mesh.shape[a] for a in data_axes)
  batch_spec = PartitionSpec(data_axes)
  explicit = any(t == AxisType.Explicit
                 for a, t in zip(mesh.axis_names, mesh.axis_types) if a in data_axes)

  def per_device(arrays: Mapping[str, Array]) -> dict[str, Array]:
    blocks = _Blocks(
        offset=lax.axis_index(data_axes) * arrays["query_emb"].shape[0],
        gather=functools.partial(lax.all_gather, axis_name=data_axes, tiled=True),
        sum=functools.partial(lax.psum, axis_name=data_axes),
        max=functools.partial(lax.pmax, axis_name=data_axes))
    return _loss_and_metrics(
        arrays["query_emb"], arrays["passage_emb"], arrays.get("negative_emb"),
        arrays.get("query_ids"), arrays.get("passage_ids"), arrays.get("negative_ids"), blocks,
        **options)

  def loss_fn(query_emb, passage_emb, *, negative_emb=None, query_ids=None, passage_ids=None,
              negative_ids=None):
    _check_inputs(query_emb, passage_emb, negative_emb, query_ids, passage_ids, negative_ids)
    batch = query_emb.shape[0]
    if batch % num_shards:
      raise ValueError(
          f"the global batch of {batch} examples does not split evenly over the"
          f" {num_shards} devices of mesh axes {data_axes}: use a multiple of {num_shards}.")
    arrays = dict(query_emb=query_emb, passage_emb=passage_emb, negative_emb=negative_emb,
                  query_ids=query_ids, passage_ids=passage_ids, negative_ids=negative_ids)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if explicit:
      arrays = {k: jax.reshard(v, NamedSharding(mesh, batch_spec)) for k, v in arrays.items()}
    means = jax.shard_map(per_device, mesh=mesh, in_specs=(batch_spec,),
                          out_specs=PartitionSpec())(arrays)
    return means["loss"], means

  return loss_fn
