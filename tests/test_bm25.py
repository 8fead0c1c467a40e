"""BM25: Lucene's English analysis, written out by hand from Lucene's rules, and Lucene's
BM25 from its formula."""

import math

import numpy as np
import pytest

from samtone_jax import beir_format, bm25

LUCENE_STOP_WORDS = ("a an and are as at be but by for if in into is it no not of on or such"
                     " that the their then there these they this to was will with")


@pytest.mark.parametrize("text,tokens", [
    # Possessives go ('s, ’s, 'S), before lower-casing and stop words; a plural's bare
    # apostrophe is no part of the word.
    ("The cat's toys are in Bob’s house.", ["cat", "toi", "bob", "hous"]),
    ("JOHN'S O’Neil’s runners'", ["john", "o’neil", "runner"]),
    # Lucene's 33 English stop words go, and only they: "he", "would", "have" stay.
    (LUCENE_STOP_WORDS, []),
    ("He would have it", ["he", "would", "have"]),
    # The original Porter algorithm, not Porter2 (Snowball "english": generous, general,
    # die, news).
    ("generously generalization dying news", ["gener", "gener", "dy", "new"]),
    # Words of one or two letters are not stemmed ("us" stays, "gas" loses its s).
    ("us gas", ["us", "ga"]),
    # Unicode word boundaries: single letters and numbers are tokens, a number keeps its
    # separators, an acronym its inner dots, a hyphen splits.
    ("x = 3.14, 1,000 or 2nd e-mail wi-fi U.S.A.", ["x", "3.14", "1,000", "2nd", "e", "mail",
                                                   "wi", "fi", "u.s.a"]),
])
def test_analysis_is_lucenes_english_analyzer(text, tokens):
  assert bm25.analyze([text]) == [tokens]


CORPUS = ["The runners' shoes are running shoes.",
          "A runner ran to the shops in the rain; it rained and rained.",
          "Shoe shops: 3 shoes for 2 dollars.",
          "It is what it is, and that is that.",
          "Bob's dog runs."]
# CORPUS as Lucene's English analyzer gives it, by hand.
CORPUS_TOKENS = [["runner", "shoe", "run", "shoe"],
                 ["runner", "ran", "shop", "rain", "rain", "rain"],
                 ["shoe", "shop", "3", "shoe", "2", "dollar"],
                 ["what"],
                 ["bob", "dog", "run"]]
QUERY_TOKENS = {"running shoes": ["run", "shoe"], "Rain, shops!": ["rain", "shop"],
                "2 dollars": ["2", "dollar"], "shoe shoes": ["shoe", "shoe"],
                "what is it": ["what"]}


def lucene_bm25(docs, query, k1=0.9, b=0.4):
  """Lucene's BM25 (since Lucene 8, without the constant factor k1 + 1) of each document
  of `docs` (lists of analysed tokens) for `query` (its tokens, a repeated one counting
  each time); dl is a document's number of analysed tokens."""
  avgdl = np.mean([len(d) for d in docs])
  scores = np.zeros(len(docs))
  for word in query:
    df = sum(word in d for d in docs)
    if df:
      idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
      tf = np.array([d.count(word) for d in docs])
      dl = np.array([len(d) for d in docs])
      scores += idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))
  return scores


def test_corpus_tokens_are_the_analysis():
  assert bm25.analyze(CORPUS) == CORPUS_TOKENS
  assert bm25.analyze(list(QUERY_TOKENS)) == list(QUERY_TOKENS.values())


@pytest.mark.parametrize("query", list(QUERY_TOKENS))
def test_scores_are_lucenes_bm25_of_the_analysed_tokens(query):
  scores, indices = bm25.search(CORPUS, [query], k=len(CORPUS))
  want = lucene_bm25(CORPUS_TOKENS, QUERY_TOKENS[query])
  assert sorted(indices[0]) == list(range(len(CORPUS)))
  np.testing.assert_allclose(scores[0], want[indices[0]], rtol=1e-5, atol=1e-6)
  assert list(scores[0]) == sorted(scores[0], reverse=True)


def test_nfcorpus_is_beirs_published_bm25_row(shared_data):
  """BEIR's published BM25 nDCG@10 on NFCorpus (test) is 0.325 (Lucene, through
  Elasticsearch); Anserini's, with one field as here, 0.322."""
  eval_set = beir_format.eval_set(shared_data / "beir" / "nfcorpus.zip" / "nfcorpus")
  found, _ = bm25.evaluate(eval_set)
  assert found["nDCG@10"] == pytest.approx(0.325, abs=0.01)


# Texts sharing words unevenly (ties, repeats, stop words), more than one analysis batch.
MANY = [f"{CORPUS[i % len(CORPUS)]} shoe{'s' * (i % 2)} number {i % 7} the rain {i}"
        for i in range(23)]


def test_ids_are_the_analysis_in_batches():
  tokenized = bm25.analyze_ids(MANY, batch_size=4)
  words = {i: word for word, i in tokenized.vocab.items()}
  assert [[words[i] for i in doc] for doc in tokenized.ids] == bm25.analyze(MANY)
  assert sorted(tokenized.vocab.values()) == list(range(len(tokenized.vocab)))


@pytest.mark.parametrize("analysis_batch, query_batch", [(4, 2), (len(MANY), 6), (23, 1)])
def test_search_in_batches_is_bm25s_over_the_analysed_words(analysis_batch, query_batch):
  """bm25s over the whole analysis in one call: the same documents and scores whatever the
  batches (2 does not divide 5 queries); each score is Lucene's BM25 of the analysed words."""
  import bm25s  # pylint: disable=g-import-not-at-top
  queries = ["running shoes", "rain 3", "number 5 dollars", "what", "17"]
  reference = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
  reference.index(bm25.analyze(MANY), show_progress=False)
  want_indices, want_scores = reference.retrieve(bm25.analyze(queries), k=10,
                                                 show_progress=False)
  scores, indices = bm25.search(MANY, queries, k=10, analysis_batch=analysis_batch,
                                query_batch=query_batch)
  assert scores.shape == indices.shape == (len(queries), 10)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(scores, np.asarray(want_scores, np.float32))
  for q, words in enumerate(bm25.analyze(queries)):
    np.testing.assert_allclose(scores[q], lucene_bm25(bm25.analyze(MANY), words)[indices[q]],
                               rtol=1e-5, atol=1e-6)


def test_search_checks_k_and_the_query_batch():
  with pytest.raises(ValueError, match=r"k=6 must be in \[1, 5\]"):
    bm25.search(CORPUS, ["shoe"], k=6)
  with pytest.raises(ValueError, match="query_batch=0 must be at least 1"):
    bm25.search(CORPUS, ["shoe"], k=2, query_batch=0)
