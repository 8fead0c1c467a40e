"""compute_metrics against pytrec_eval (trec_eval) on random runs with ties and graded qrels."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import pytrec_eval

from samtone_jax import metrics

K = (1, 5, 10, 100)


def _random_case(seed):
  rng = np.random.default_rng(seed)
  docs = [f"d{i}" for i in range(rng.integers(2, 40))]  # "d10" < "d2" as strings
  qrels, run = {}, {}
  for q in range(rng.integers(1, 8)):
    qid = f"q{q}"
    judged = rng.choice(docs, size=rng.integers(1, len(docs) + 1), replace=False)
    qrels[qid] = {d: int(rng.integers(0, 4)) for d in judged}
    qrels[qid][str(judged[0])] = int(rng.integers(1, 4))  # at least one relevant
    if rng.random() < 0.85:  # some queries are missing from the run
      retrieved = rng.choice(docs, size=rng.integers(1, len(docs) + 1), replace=False)
      run[qid] = {d: float(rng.integers(0, 5)) / 4 for d in retrieved}  # many ties
  return qrels, run


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31))
def test_metrics_match_pytrec_eval(seed):
  qrels, run = _random_case(seed)
  got = metrics.compute_metrics(qrels, run, K)
  measures = {"P.1", "recip_rank", "recall." + ",".join(map(str, K)),
              "ndcg_cut." + ",".join(map(str, K))}
  per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
  mean = lambda f: np.mean([f(per_query[q]) if q in per_query else 0.0 for q in qrels])
  want = {"P@1": mean(lambda m: m["P_1"]), "MRR": mean(lambda m: m["recip_rank"]),
          # MRR@10: the reciprocal rank when the first relevant is within the top 10.
          "MRR@10": mean(lambda m: m["recip_rank"] if m["recip_rank"] >= 0.1 - 1e-12 else 0)}
  for k in K:
    want[f"Recall@{k}"] = mean(lambda m, k=k: m[f"recall_{k}"])
    want[f"nDCG@{k}"] = mean(lambda m, k=k: m[f"ndcg_cut_{k}"])
  assert got.keys() == want.keys()
  for name, value in want.items():
    assert got[name] == pytest.approx(value, abs=1e-9), (name, qrels, run)


def test_ties_are_broken_by_decreasing_document_id():
  assert metrics.ranking({"d2": 0.5, "d10": 0.5, "d1": 0.9}) == ["d1", "d2", "d10"]


def test_a_query_missing_from_the_run_scores_zero():
  got = metrics.compute_metrics({"a": {"x": 1}, "b": {"y": 2}}, {"a": {"x": 1.0}}, (1,))
  assert got == {"P@1": 0.5, "MRR": 0.5, "MRR@10": 0.5, "Recall@1": 0.5, "nDCG@1": 0.5}


def test_empty_qrels_is_an_error():
  with pytest.raises(ValueError, match="qrels is empty"):
    metrics.compute_metrics({}, {})
