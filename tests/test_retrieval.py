"""Blocked exact top-k against a brute-force numpy ranking; sharded equals unsharded."""

import jax
import numpy as np
import pytest

from samtone_jax import partitioning, retrieval


def _case(seed, num_queries=7, n=103, d=5):
  """Small-integer vectors: exact scores, with many ties (and repeated documents)."""
  rng = np.random.default_rng(seed)
  queries = rng.integers(-2, 3, (num_queries, d)).astype(np.float32)
  corpus = rng.integers(-2, 3, (n, d)).astype(np.float32)
  corpus[10:20] = corpus[0]  # exact duplicates
  return queries, corpus


def _brute_force(queries, corpus, k):
  scores = queries.astype(np.float64) @ corpus.T.astype(np.float64)
  order = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
  return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("k, block_size", [(1, 16), (10, 16), (10, 1000), (103, 7)])
def test_top_k_equals_brute_force_with_ties(k, block_size):
  queries, corpus = _case(0)
  scores, indices = retrieval.top_k(queries, corpus, k=k, block_size=block_size)
  want_scores, want_indices = _brute_force(queries, corpus, k)
  np.testing.assert_array_equal(indices, want_indices)  # ties by document index
  np.testing.assert_allclose(scores, want_scores)


@pytest.mark.parametrize("few", [0, 2, 1000])
def test_both_merges_equal_brute_force_with_ties(monkeypatch, few):
  """A block merges only its best groups when no query has more than FEW above its floor,
  else whole: FEW = 0 merges (nearly) every block whole, 1000 none, 2 a mix; all exact."""
  monkeypatch.setattr(retrieval, "FEW", few)
  jax.clear_caches()  # FEW is read when top_k is traced
  queries, corpus = _case(2, n=3000)
  scores, indices = retrieval.top_k(queries, corpus, k=20, block_size=64)
  want_scores, want_indices = _brute_force(queries, corpus, 20)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_allclose(scores, want_scores)
  jax.clear_caches()


def test_best_groups_merge_in_document_order(monkeypatch):
  """Two groups of a block, the later one with the higher best score: their equal scores
  still rank by document index."""
  monkeypatch.setattr(retrieval, "FEW", 1000)  # every block through its best groups
  jax.clear_caches()
  corpus = np.zeros((16, 1), np.float32)
  corpus[0], corpus[8], corpus[9] = 1, 2, 1  # groups [0, 8) and [8, 16)
  _, indices = retrieval.top_k(np.ones((1, 1), np.float32), corpus, k=2, block_size=16)
  np.testing.assert_array_equal(indices, [[8, 0]])
  jax.clear_caches()


@pytest.mark.parametrize("n, k, block_size, chunk_rows", [
    (103, 10, 4, None), (9, 9, 2, None), (1000, 50, 64, None), (103, 10, 4, 1),
    (103, 20, 4, 37), (1000, 50, 16, 300)])
def test_sharded_and_streamed_equal_unsharded(n, k, block_size, chunk_rows):
  queries, corpus = _case(1, n=n)
  mesh = partitioning.create_mesh()  # 8 devices on "data"
  got = retrieval.sharded_top_k(mesh, queries, corpus, k=k, block_size=block_size,
                                chunk_rows=chunk_rows)
  want = retrieval.top_k(queries, corpus, k=k, block_size=block_size)
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_array_equal(got[0], want[0])


def test_memory_is_bounded_by_the_block():
  """The compiled program holds [Q, block] scores, never [Q, N]."""
  queries, corpus = np.zeros((64, 8), np.float32), np.zeros((4096, 8), np.float32)
  hlo = jax.jit(lambda q, c: retrieval.top_k(q, c, k=5, block_size=256)).lower(
      queries, corpus).compile().as_text()
  assert "f32[64,256]" in hlo and "f32[64,4096]" not in hlo


def test_k_larger_than_the_corpus_is_a_clear_error():
  with pytest.raises(ValueError, match="k=5 must be in"):
    retrieval.top_k(np.zeros((1, 2), np.float32), np.zeros((3, 2), np.float32), k=5)


@pytest.mark.parametrize("chunk_rows", [None, 37])
def test_query_batches_equal_one_batch_with_ties(chunk_rows):
  """Queries searched 3 at a time (3 does not divide 7) rank as all 7 at once, ties
  (duplicate documents, small-integer scores) by document index."""
  queries, corpus = _case(1, n=103)
  queries[4] = queries[0]  # equal queries in different batches
  mesh = partitioning.create_mesh()
  got = retrieval.sharded_top_k(mesh, queries, corpus, k=20, block_size=4,
                                chunk_rows=chunk_rows, query_batch=3)
  want_scores, want_indices = _brute_force(queries, corpus, 20)
  np.testing.assert_array_equal(got[1], want_indices)
  np.testing.assert_allclose(got[0], want_scores)
  whole = retrieval.sharded_top_k(mesh, queries, corpus, k=20, block_size=4,
                                  chunk_rows=chunk_rows, query_batch=len(queries))
  np.testing.assert_array_equal(got[1], whole[1])
  np.testing.assert_array_equal(got[0], whole[0])
