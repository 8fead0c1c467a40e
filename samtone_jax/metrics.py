"""Retrieval metrics over whole rankings: P@1, MRR, MRR@10, Recall@k, nDCG@k.

The paper reports P@1 and MRR over the full candidate pool (MultiReQA) and nDCG@10 (BEIR);
MS MARCO's official metric is MRR@10. Conventions are trec_eval's (so pytrec_eval agrees):
- a document is relevant when its qrels relevance is > 0; nDCG uses the graded relevance
  as gain, with log2(rank + 1) discounts, against the ideal ordering of the qrels;
- a run ranks by decreasing score, ties by decreasing document id (string order);
- every query of the qrels counts: one missing from the run scores 0 on every metric.
"""

import math
from typing import Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def ranking(scores: Mapping[str, float]) -> list[str]:
  """Document ids by decreasing score, ties by decreasing id (trec_eval's order)."""
  by_id = sorted(scores, reverse=True)
  return sorted(by_id, key=lambda doc: -scores[doc])  # stable: ties keep decreasing ids


def query_metrics(judged: Mapping[str, int], ranked: Sequence[str],
                  k_values: Sequence[int]) -> dict[str, float]:
  """The metrics of one query: its qrels {doc: relevance} and its ranked document ids."""
  relevant = {doc for doc, rel in judged.items() if rel > 0}
  first = next((rank for rank, doc in enumerate(ranked, start=1) if doc in relevant), None)
  out = {"P@1": float(bool(ranked) and ranked[0] in relevant),
         "MRR": 1.0 / first if first else 0.0,
         "MRR@10": 1.0 / first if first and first <= 10 else 0.0}
  ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)
  for k in k_values:
    top = ranked[:k]
    out[f"Recall@{k}"] = len(relevant.intersection(top)) / len(relevant) if relevant else 0.0
    dcg = sum(max(judged.get(doc, 0), 0) / math.log2(rank + 1)
              for rank, doc in enumerate(top, start=1))
    idcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(ideal[:k], start=1))
    out[f"nDCG@{k}"] = dcg / idcg if idcg else 0.0
  return out


def compute_metrics(qrels: Qrels, run: Run,
                    k_values: Sequence[int] = (1, 5, 10, 100)) -> dict[str, float]:
  """Mean metrics over the queries of `qrels`.

  Args:
    qrels: {query id: {document id: relevance (int)}}, BEIR-style.
    run: {query id: {document id: score}}; scores rank each query's retrieved documents.
    k_values: the cut-offs of Recall@k and nDCG@k.

  Returns:
    {"P@1", "MRR", "MRR@10", "Recall@k", "nDCG@k" for each k}: means over the qrels'
    queries (0 for a query the run lacks).

  Example:
    >>> compute_metrics({"q": {"a": 1}}, {"q": {"a": 0.2, "b": 0.9}}, k_values=(1,))
    {'P@1': 0.0, 'MRR': 0.5, 'MRR@10': 0.5, 'Recall@1': 0.0, 'nDCG@1': 0.0}
  """
  if not qrels:
    raise ValueError("qrels is empty: no query to evaluate.")
  totals = {}
  for qid, judged in qrels.items():
    for name, value in query_metrics(judged, ranking(run.get(qid, {})), k_values).items():
      totals[name] = totals.get(name, 0.0) + value
  return {name: total / len(qrels) for name, total in totals.items()}
