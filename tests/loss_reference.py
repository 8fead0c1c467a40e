"""The losses of docs/design.md ("The losses"), term by term: the independent reference.

Loops over rows and columns, one Python list of terms per denominator, no masks or matrix
tricks: slow, and plainly the formulas. `xp` is numpy (float64 values) or jax.numpy (so that
`jax.grad` of this transcription checks the gradients of the library's loss).
"""

import numpy as np


def _flat_ids(negative_ids, count):
  return [None] * count if negative_ids is None else [int(i) for r in negative_ids for i in r]


def _removed_negative(i, nid, qids, pids):
  """Hard negative `nid` leaves row i: no negative in its slot, or a known positive of i."""
  if nid is None:
    return False
  if nid < 0:
    return True
  return pids is not None and any(
      pids[j] == nid and (j == i or (qids is not None and qids[j] == qids[i]))
      for j in range(len(pids)))


def _log_sum_exp(xp, terms):
  terms = xp.stack(terms)
  top = xp.max(terms)
  return top + xp.log(xp.sum(xp.exp(terms - top)))


def reference_loss(q, p, *, temperature, same_tower, bidirectional, pair_alpha,
                   negatives=None, query_ids=None, passage_ids=None, negative_ids=None,
                   xp=np):
  """Returns (loss, parts) for q, p [B, d], negatives [B, k, d] or None, ids [B] or None,
  negative_ids [B, k] or None."""
  t = temperature
  batch = q.shape[0]
  s = lambda a, b: xp.sum(a * b) / t
  negs = [] if negatives is None else [n for row in negatives for n in row]
  qids = None if query_ids is None else [int(i) for i in query_ids]
  pids = None if passage_ids is None else [int(i) for i in passage_ids]
  nids = _flat_ids(negative_ids, len(negs))

  def known_positive(i, j):  # Item j of the other tower is a positive of anchor i.
    return ((qids is not None and qids[j] == qids[i])
            or (pids is not None and pids[j] == pids[i]))

  def copy_of(ids, i, j):  # Same-tower item j is a copy of anchor i.
    return ids is not None and ids[j] == ids[i]

  qp_rows, pq_rows, pair_rows = [], [], []
  for i in range(batch):
    pos = s(q[i], p[i])
    terms = [pos] + [s(q[i], p[j]) for j in range(batch) if j != i and not known_positive(i, j)]
    terms += [s(q[i], n) for n, nid in zip(negs, nids) if not _removed_negative(i, nid, qids, pids)]
    if same_tower in ("query", "both"):
      terms += [s(q[i], q[j]) for j in range(batch) if j != i and not copy_of(qids, i, j)]
    qp_rows.append(_log_sum_exp(xp, terms) - pos)

    pp_terms = [s(p[i], p[j]) for j in range(batch) if j != i and not copy_of(pids, i, j)]
    pair_rows.append(_log_sum_exp(xp, [pos] + pp_terms) - pos)

    pos_pq = s(p[i], q[i])
    terms = [pos_pq] + [s(p[i], q[j]) for j in range(batch)
                        if j != i and not known_positive(i, j)]
    if same_tower in ("document", "both"):
      terms += pp_terms
    pq_rows.append(_log_sum_exp(xp, terms) - pos_pq)

  mean = lambda rows: xp.sum(xp.stack(rows)) / batch
  parts = {"loss_qp": mean(qp_rows), "loss_pq": mean(pq_rows), "loss_pair": mean(pair_rows)}
  loss = parts["loss_qp"]
  if pair_alpha > 0:
    loss = (1 - pair_alpha) * parts["loss_qp"] + pair_alpha * parts["loss_pair"]
  if bidirectional:
    loss = loss + parts["loss_pq"]
  return loss, parts


def reference_metrics(q, p, *, negatives=None, query_ids=None, passage_ids=None,
                      negative_ids=None):
  """In-batch ranks and mean similarities, by loops over numpy float64 arrays."""
  q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
  batch = q.shape[0]
  negs = [] if negatives is None else [np.asarray(n, np.float64) for row in negatives for n in row]
  nids = _flat_ids(negative_ids, len(negs))
  qids = None if query_ids is None else [int(i) for i in query_ids]
  pids = None if passage_ids is None else [int(i) for i in passage_ids]
  masked = lambda i, j: ((query_ids is not None and query_ids[j] == query_ids[i])
                         or (passage_ids is not None and passage_ids[j] == passage_ids[i]))
  ranks_qp, hits_pq = [], []
  for i in range(batch):
    pos = q[i] @ p[i]
    others = [q[i] @ p[j] for j in range(batch) if j != i and not masked(i, j)]
    others += [q[i] @ n for n, nid in zip(negs, nids)
               if not _removed_negative(i, nid, qids, pids)]
    ranks_qp.append(1 + sum(o > pos for o in others))
    hits_pq.append(all(p[i] @ q[j] <= pos for j in range(batch) if j != i and not masked(i, j)))
  off_diagonal = lambda a, c: np.mean([a[i] @ c[j] for i in range(batch) for j in range(batch)
                                       if j != i]) if batch > 1 else 0.0
  empty = {} if negative_ids is None else {
      "empty_negatives": np.mean([i is not None and i < 0 for i in nids])}
  return empty | {
      "accuracy_qp": np.mean([r == 1 for r in ranks_qp]),
      "mrr_qp": np.mean([1 / r for r in ranks_qp]),
      "accuracy_pq": np.mean(hits_pq),
      "pos_sim": np.mean([q[i] @ p[i] for i in range(batch)]),
      "neg_sim": off_diagonal(q, p),
      "qq_sim": off_diagonal(q, q),
      "pp_sim": off_diagonal(p, p),
  }
