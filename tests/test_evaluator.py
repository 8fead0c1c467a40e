"""`Evaluator`: built once from the evaluation sets, scores an `Embedder` as a brute-force
ranking in numpy scores it; in memory or through corpus shards; with BM25's rows."""

import json

import jax
import numpy as np
import pytest
import seqio

from samtone_jax import bm25, data_files, embedder, evaluator, partitioning, run_dir
from samtone_jax import metrics as metrics_lib
from samtone_jax import beir_format
from tests.byte_ids import byte_ids

WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "jam"]
CORPUS = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {WORDS[(7 * i) % 10]} {i}"
          for i in range(30)}
LENGTHS = {"queries": 16, "passages": 32}


PROJECTION = np.random.default_rng(0).normal(size=(260, 16)).astype(np.float32)


def _bag_of_bytes(params, ids):  # counts of byte values, normalised (no parameters)
  counts = jax.nn.one_hot(ids, 260).sum(axis=1).at[:, :4].set(0)
  return counts / jax.numpy.linalg.norm(counts, axis=-1, keepdims=True)


def _projected(params, ids):
  """The bag of bytes projected to 16 dimensions: no two texts of CORPUS score alike."""
  return _bag_of_bytes(params, ids) @ PROJECTION


def _toy_embedder(encode=_projected, batch_size=8):
  return embedder.Embedder(encode, encode, {}, seqio.ByteVocabulary(), LENGTHS,
                           partitioning.create_mesh(), batch_size=batch_size)



def _numpy_metrics(eval_set, k):
  """The metrics of a brute-force ranking in numpy of the projected toy embeddings: the top
  k of each query by score, a document of the query's id dropped."""
  emb = lambda texts, length: np.asarray(_projected(None, byte_ids(texts, length)))
  query_ids, doc_ids = list(eval_set.qrels), list(eval_set.corpus)
  scores = (emb([eval_set.queries[q] for q in query_ids], LENGTHS["queries"])
            @ emb(list(eval_set.corpus.values()), LENGTHS["passages"]).T)
  run = {}
  for row, qid in enumerate(query_ids):
    top = np.lexsort((np.arange(len(doc_ids)), -scores[row]))[:k]
    run[qid] = {doc_ids[j]: float(scores[row, j]) for j in top if doc_ids[j] != qid}
  return metrics_lib.compute_metrics(eval_set.qrels, run), run


def _beir_set(folder):
  return beir_format.eval_set(folder, "test")


def test_a_toy_set_is_ranked_in_full():
  """A bag-of-bytes "encoder" that finds each query's own document: P@1 = MRR = 1, and a
  document whose id is the query's is never retrieved (as BEIR)."""
  words = WORDS[:9]
  eval_set = data_files.RetrievalSet(
      queries={f"q{i}": w for i, w in enumerate(words)},
      corpus={**{f"d{i}": f"{w} {w} tree" for i, w in enumerate(words)}, "q0": "apple"},
      qrels={f"q{i}": {f"d{i}": 1} for i in range(len(words))})
  metrics, run = evaluator.evaluate_set(_toy_embedder(_bag_of_bytes, batch_size=3), eval_set,
                                       k=5)
  assert metrics["P@1"] == 1.0 and metrics["MRR"] == 1.0
  assert "q0" not in run["q0"] and len(run["q1"]) == 5  # the self-hit of q0 is dropped


@pytest.mark.parametrize("stream_above", [None, 0, 29, 30])
def test_metrics_equal_a_numpy_ranking_in_memory_or_streamed(
    beir_folder, tmp_path, stream_above):
  """A corpus of 30 documents, in memory or through shards (above `stream_above`
  documents): the metrics of numpy's brute-force ranking; shards only where streamed."""
  folder = beir_folder(tmp_path / "sets" / "eval", CORPUS)
  options = {} if stream_above is None else dict(embeddings_dir=tmp_path / "embeddings",
                                                   stream_above=stream_above)
  results = evaluator.Evaluator([f"beir:{folder}"], k=7, **options)(_toy_embedder())
  want, _ = _numpy_metrics(_beir_set(folder), 7)
  assert list(results) == ["beir_eval"]
  assert results["beir_eval"] == pytest.approx(want, abs=1e-6)
  streamed = stream_above is not None and len(CORPUS) > stream_above
  assert (tmp_path / "embeddings" / "beir_eval" / "meta.json").is_file() == streamed


def test_bm25_rows_and_written_files(beir_folder, tmp_path):
  """EVAL_BASELINES = ['bm25']: each set's `<set>_bm25` row is BM25's; with an output folder,
  metrics.json holds every row and each row gets its TREC run file, best first."""
  folder = beir_folder(tmp_path / "sets" / "eval", CORPUS)
  out = run_dir.EvalDir(tmp_path / "out")
  results = evaluator.Evaluator([f"beir:{folder}"], k=5, baselines=["bm25"],
                                embeddings_dir=out.embeddings)(_toy_embedder(), out)
  want, run = _numpy_metrics(_beir_set(folder), 5)
  assert sorted(results) == ["beir_eval", "beir_eval_bm25"]
  assert results["beir_eval"] == pytest.approx(want, abs=1e-6)
  assert results["beir_eval_bm25"] == bm25.evaluate(_beir_set(folder), 5)[0]
  assert json.loads(out.metrics.read_text()) == results
  lines = out.trec_run("beir_eval").read_text().splitlines()
  assert len(lines) == sum(map(len, run.values()))
  first = lines[0].split()
  best = max(run[first[0]].items(), key=lambda kv: kv[1])
  assert first[1:4] == ["Q0", best[0], "1"] and first[5] == "samtone_jax"
  assert out.trec_run("beir_eval_bm25").is_file()


def test_sets_and_settings_are_checked_when_built(beir_folder, tmp_path):
  """Unknown sets and unknown baselines fail at once, before any model."""
  with pytest.raises(KeyError, match="no evaluation set 'no_such_set'"):
    evaluator.Evaluator(["no_such_set"])
  folder = beir_folder(tmp_path / "eval", CORPUS)
  with pytest.raises(ValueError, match="EVAL_BASELINES may hold 'bm25'"):
    evaluator.Evaluator([f"beir:{folder}"], baselines=["bm26"])
  assert evaluator.Evaluator([])(_toy_embedder()) == {}
