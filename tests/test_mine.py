"""Mining negatives (BM25 and dense) and the BM25 baseline, against written-out references."""

import json

import numpy as np
import pytest

from samtone_jax import bm25, data_files, metrics, mine
from tests import test_bm25

CORPUS = ["the cat sat on the mat", "dogs chase cats", "a cat and a dog play",
          "stock markets fell sharply", "the dog sat", "cats purr softly on mats"]


def test_bm25_evaluation_is_scored_by_compute_metrics():
  eval_set = data_files.RetrievalSet(
      queries={"q1": "cat sat", "q2": "markets"}, name="toy",
      corpus={f"d{i}": text for i, text in enumerate(CORPUS)},
      qrels={"q1": {"d4": 1}, "q2": {"d3": 1}})
  found, run = bm25.evaluate(eval_set, k=3)
  assert list(run["q2"])[0] == "d3" and len(run["q1"]) == 3
  assert found == metrics.compute_metrics(eval_set.qrels, run)
  # "cat sat": d0 holds both words, d4 only "sat": the positive is second.
  assert found["MRR"] == pytest.approx((1 / 2 + 1) / 2)


def test_negatives_skip_positives_the_top_window_and_the_margin():
  ranked, scores = np.array([4, 2, 7, 1, -1, 3]), np.array([.9, .8, .7, .6, 0, .5])
  assert mine.negatives(ranked, scores, {2}, top_n=3) == [4, 7, 1]
  assert mine.negatives(ranked, scores, {2}, top_n=3, skip_top=1) == [7, 1, 3]
  assert mine.negatives(ranked, scores, {2}, top_n=5, max_score=0.65) == [1, 3]


def test_bm25_mining_writes_what_the_own_data_task_reads(tmp_path):
  """Known positives (of every file, equal up to whitespace) never come back as negatives;
  the BEIR corpus file adds documents; pairs keep their order."""
  pairs = [("cat sat", "the dog sat"), ("cat  sat", "the cat sat on the mat"),
           ("markets", "stock markets fell sharply")]
  (tmp_path / "a.jsonl").write_text("".join(
      json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs[:2]))
  (tmp_path / "b.tsv").write_text("\t".join(pairs[2]) + "\n")
  (tmp_path / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": str(i), "title": "", "text": t}) + "\n" for i, t in enumerate(CORPUS)))
  out = tmp_path / "mined.jsonl"
  counts = mine.mine(input_files=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.tsv")],
                     output_file=str(out), corpus_files=[str(tmp_path / "corpus.jsonl")],
                     method="bm25", top_n=2)
  assert counts == {"pairs": 3, "queries": 2, "corpus": 6, "short": 0}
  got = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(g["query"], g["passage"]) for g in got] == pairs
  # Of the documents that are no answer of "cat sat", three share "cat" with it (stemmed,
  # "cats" is "cat"): the two of three words rank above the one of four.
  assert got[0]["negatives"] == got[1]["negatives"]
  assert sorted(got[0]["negatives"]) == ["a cat and a dog play", "dogs chase cats"]
  assert not {CORPUS[0], CORPUS[4]} & set(got[0]["negatives"])
  assert len(got[2]["negatives"]) == 2 and CORPUS[3] not in got[2]["negatives"]
  with pytest.raises(ValueError, match="MINE_MARGIN needs a dense model"):
    mine.mine(input_files=[str(tmp_path / "a.jsonl")], output_file=str(out), method="bm25",
              margin=0.1)


def test_mining_with_ids_keeps_them_and_drops_positives_by_id_and_text(tmp_path):
  """One query_id is one query, its passages all positives; a BEIR document is its _id, and
  one with a positive's text is no negative under another id either."""
  lines = [{"query": "cat sat", "query_id": "q1", "passage": "the dog sat", "passage_id": "d4"},
           {"query": "a cat sat", "query_id": "q1", "passage": "the cat sat on the mat",
            "passage_id": "d0"},
           {"query": "dogs", "query_id": "q2", "passage": "dogs chase cats", "passage_id": "d1"}]
  (tmp_path / "a.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  corpus = dict(enumerate(CORPUS)) | {7: "the  dog sat"}
  (tmp_path / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in corpus.items()))
  out = tmp_path / "mined.jsonl"
  counts = mine.mine(input_files=[str(tmp_path / "a.jsonl")], output_file=str(out),
                     corpus_files=[str(tmp_path / "corpus.jsonl")], method="bm25", top_n=10)
  assert counts == {"pairs": 3, "queries": 2, "corpus": 7, "short": 3}
  got = [json.loads(line) for line in out.read_text().splitlines()]
  assert [{k: g[k] for k in lines[0]} for g in got] == lines
  assert got[0]["negatives"] == got[1]["negatives"]  # the query of "q1" is "cat sat"
  assert [corpus[int(i[1:])] for i in got[0]["negative_ids"]] == got[0]["negatives"]
  assert sorted(got[0]["negative_ids"]) == ["d1", "d2", "d3", "d5"]  # not d0, d4, d7
  assert "d1" not in got[2]["negative_ids"] and len(got[2]["negative_ids"]) == 6
  (tmp_path / "b.jsonl").write_text('{"query": "q", "passage": "p"}\n')
  with pytest.raises(data_files.DataError, match=r"b.jsonl: id fields \[\] where .*a.jsonl"):
    mine.mine(input_files=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
              output_file=str(out), method="bm25")


def _reference_pool(scores, excluded, top_n, skip_top, max_score):
  """The rule on the whole corpus: rank all documents, drop the excluded, skip the top ones,
  drop those above max_score, keep the first top_n."""
  ranked = [d for d in np.argsort(-scores, kind="stable") if d not in excluded][skip_top:]
  return [int(d) for d in ranked if scores[d] <= max_score][:top_n]


def test_mined_pools_search_deeper_until_the_margin_leaves_enough():
  """200 documents, top 30, margin 0.05 (10 ranks): each positive's rank decides how deep
  the search must go; the pools are the rule's on the whole corpus, full where it can be."""
  rng = np.random.default_rng(0)
  ranks = [0, 10, 31, 90, 150, 180]  # the positive's rank, one query each
  scores = np.zeros((len(ranks), 200))
  positives = []
  for q, rank in enumerate(ranks):
    order = rng.permutation(200)
    scores[q, order] = np.linspace(1, 0, 200)  # distinct scores, 1/199 apart
    positives.append(int(order[rank]))
  calls = []

  def search(rows, depth):
    calls.append((rows.tolist(), depth))
    ranked = np.argsort(-scores[rows], axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(scores[rows], ranked, axis=1), ranked

  max_scores = [scores[q, p] - 0.05 for q, p in enumerate(positives)]
  excluded = [{p} for p in positives]
  got = mine.mined_pools(search, range(len(ranks)), excluded, [30] * len(ranks),
                         corpus_size=200, depth=33, skip_top=2, max_scores=max_scores)
  want = [_reference_pool(scores[q], excluded[q], 30, 2, max_scores[q])
          for q in range(len(ranks))]
  assert got == want
  assert [len(pool) for pool in got] == [30, 30, 30, 30, 30, 10]  # 19 below, 9 in the margin
  # Twice as deep each time, for the queries still short: each needs its positive's rank + 1
  # + 2 skipped + 9 in the margin + 30 documents.
  assert calls == [([0, 1, 2, 3, 4, 5], 33), ([0, 1, 2, 3, 4, 5], 66), ([2, 3, 4, 5], 132),
                   ([4, 5], 200)]


def _write_jsonl(path, lines):
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return str(path)


def _read_jsonl(path):
  return [json.loads(line) for line in path.read_text().split("\n") if line]


def test_a_query_is_no_negative_of_itself(tmp_path):
  """By its normalised text, and with ids by its query_id."""
  corpus = _write_jsonl(tmp_path / "corpus.jsonl", [
      {"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(CORPUS)]
      + [{"_id": "d9", "text": "dogs\u2028chase"}, {"_id": "q2", "text": "cat purrs"}])
  out = tmp_path / "mined.jsonl"
  plain = _write_jsonl(tmp_path / "a.jsonl", [{"query": "dogs chase", "passage": CORPUS[1]}])
  mine.mine(input_files=[plain], output_file=str(out), corpus_files=[corpus], method="bm25",
            top_n=3)
  assert "dogs\u2028chase" not in _read_jsonl(out)[0]["negatives"]
  with_ids = _write_jsonl(tmp_path / "b.jsonl", [
      {"query": "dogs chase", "query_id": "q1", "passage": CORPUS[1], "passage_id": "d1"},
      {"query": "cat purrs", "query_id": "q2", "passage": CORPUS[5], "passage_id": "d5"}])
  mine.mine(input_files=[with_ids], output_file=str(out), corpus_files=[corpus],
            method="bm25", top_n=3)
  got = _read_jsonl(out)
  assert "d9" not in got[0]["negative_ids"] and "q2" not in got[1]["negative_ids"]
  assert len(got[0]["negative_ids"]) == len(got[1]["negative_ids"]) == 3


def test_ids_are_written_as_given_and_blank_texts_are_no_pairs(tmp_path, caplog):
  lines = [{"query": "cat sat", "query_id": 7, "passage": CORPUS[4], "passage_id": 4,
            "negatives": [" ", CORPUS[0]], "negative_ids": ["blank", 0]},
           {"query": "\u3000", "query_id": 8, "passage": CORPUS[1], "passage_id": 1},
           {"query": "dog sat markets", "query_id": "9", "passage": CORPUS[3], "passage_id": "3",
            "negatives": [], "negative_ids": []}]
  out = tmp_path / "mined.jsonl"
  with caplog.at_level("WARNING"):
    counts = mine.mine(input_files=[_write_jsonl(tmp_path / "a.jsonl", lines)],
                       output_file=str(out), method="bm25", top_n=3)
  assert counts == {"pairs": 2, "queries": 2, "corpus": 3, "short": 2}
  assert "dropped 1 training examples with an empty text, removed 1 empty" in caplog.text
  got = _read_jsonl(out)
  assert [(g["query_id"], g["passage_id"]) for g in got] == [(7, 4), ("9", "3")]
  assert got[0]["negatives"] == [CORPUS[0], CORPUS[3]] and got[0]["negative_ids"] == [0, "3"]
  assert got[1]["negatives"] == [CORPUS[4], CORPUS[0]] and got[1]["negative_ids"] == [4, 0]


def test_the_inputs_negatives_are_replaced_or_kept(tmp_path, caplog):
  lines = [{"query": "cat sat", "passage": CORPUS[0], "negatives": ["stocks", "dogs"]},
           {"query": "markets", "passage": CORPUS[3]}]
  path = _write_jsonl(tmp_path / "a.jsonl", lines)
  out = tmp_path / "mined.jsonl"
  with caplog.at_level("WARNING"):
    mine.mine(input_files=[path], output_file=str(out), method="bm25", top_n=3)
  assert "hold 2 negatives: replaced by mined ones (MINE_INPUT_NEGATIVES='replace')" in (
      caplog.text)
  replaced = _read_jsonl(out)
  assert sorted(replaced[0]["negatives"]) == sorted(["stocks", "dogs", CORPUS[3]])
  mine.mine(input_files=[path], output_file=str(out), method="bm25", top_n=3,
            input_negatives="keep")
  kept = _read_jsonl(out)
  assert kept[0]["negatives"][:2] == ["stocks", "dogs"] and len(kept[0]["negatives"]) == 3
  assert kept[0]["negatives"][2] not in ("stocks", "dogs", CORPUS[0])
  assert kept[1]["negatives"] == replaced[1]["negatives"]
  with pytest.raises(ValueError, match="MINE_INPUT_NEGATIVES must be 'replace' or 'keep'"):
    mine.mine(input_files=[path], output_file=str(out), method="bm25", input_negatives="add")


def test_every_process_counts_and_only_the_first_writes(tmp_path, monkeypatch):
  path = _write_jsonl(tmp_path / "a.jsonl", [{"query": "cat", "passage": CORPUS[0]},
                                             {"query": "dog", "passage": CORPUS[4]}])
  first = mine.mine(input_files=[path], output_file=str(tmp_path / "0.jsonl"),
                    method="bm25", top_n=1)
  monkeypatch.setattr(mine.jax, "process_index", lambda: 1)
  other = mine.mine(input_files=[path], output_file=str(tmp_path / "1.jsonl"),
                    method="bm25", top_n=2)
  assert first["short"] == 0 and other == first | {"short": 2}
  assert not (tmp_path / "1.jsonl").exists()


def test_an_empty_input_file_is_named(tmp_path):
  (tmp_path / "empty.jsonl").write_text("\n")
  path = _write_jsonl(tmp_path / "a.jsonl", [{"query": "cat", "passage": CORPUS[0]}])
  with pytest.raises(data_files.DataError, match=r"empty.jsonl: no pairs"):
    mine.mine(input_files=[path, str(tmp_path / "empty.jsonl")],
              output_file=str(tmp_path / "out.jsonl"), method="bm25")


WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "jam"]
DENSE_PAIRS = [(f"{WORDS[i]} {WORDS[(3 * i + 1) % 10]}",
                f"{WORDS[i]} {WORDS[(7 * i) % 10]} {WORDS[(i + 5) % 10]} {i}")
               for i in range(9)] + [("apple banana", "apple pie with jam")]
DENSE_EXTRA = [f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {WORDS[(7 * i + 2) % 10]} x{i}"
               for i in range(24)]


def _dense_files(tmp_path, extra=DENSE_EXTRA):
  """(pairs file, BEIR corpus file): 10 pairs of 9 queries (one with two positives), 24
  more documents, no text twice."""
  pairs = _write_jsonl(tmp_path / "pairs.jsonl",
                       [{"query": q, "passage": p} for q, p in DENSE_PAIRS])
  corpus = _write_jsonl(tmp_path / "corpus.jsonl",
                        [{"_id": f"x{i}", "title": "", "text": t} for i, t in enumerate(extra)])
  return pairs, corpus


def _mine_dense(tiny_run, files, out, **options):
  import seqio  # pylint: disable=g-import-not-at-top
  model, run, lengths = tiny_run
  return mine.mine(**{**dict(
      input_files=[files[0]], corpus_files=[files[1]], output_file=str(out), model=model,
      checkpoint_path=str(run), task_feature_lengths=lengths,
      vocabulary=seqio.ByteVocabulary(), batch_size=8, shard_size=10, chunk_rows=7),
      **options})


def _dense_reference(tiny_run, extra, top_n, skip_top, margin):
  """Each pair's negatives by numpy over the whole corpus, embedded in memory by the run's
  latest checkpoint (step 8): the corpus is the pairs' passages, then `extra`."""
  import seqio  # pylint: disable=g-import-not-at-top
  from samtone_jax import checkpoints, embedder, partitioning, retrieval  # pylint: disable=g-import-not-at-top
  model, run, lengths = tiny_run
  mesh = partitioning.create_mesh()
  params = checkpoints.load_params(model, run / "checkpoints" / "8", lengths, mesh)
  encode_queries, encode_passages = embedder.encoders(model)
  queries = list(dict.fromkeys(q for q, _ in DENSE_PAIRS))
  corpus = [p for _, p in DENSE_PAIRS] + list(extra)
  embed = lambda fn, texts, length: retrieval.encode(fn, params, retrieval.tokenize(
      texts, seqio.ByteVocabulary(), length), mesh, 8)
  query_emb = embed(encode_queries, queries, lengths["queries"])
  corpus_emb = embed(encode_passages, corpus, lengths["passages"])
  scores = query_emb @ corpus_emb.T  # [Q, N] float32
  positives = {}
  for q, p in DENSE_PAIRS:
    positives.setdefault(queries.index(q), set()).add(corpus.index(p))
  want = []
  for q, p in DENSE_PAIRS:
    qi, pi = queries.index(q), corpus.index(p)
    max_score = np.inf if margin is None else float(query_emb[qi] @ corpus_emb[pi]) - margin
    pool = _reference_pool(scores[qi], positives[qi], top_n, skip_top, max_score)
    want.append([corpus[d] for d in pool])
  return want


@pytest.mark.parametrize("margin, positive_run", [(None, 4096), (0.02, 4096), (0.02, 3)])
def test_dense_mining_from_shards_equals_numpy_over_the_whole_corpus(
    tiny_run, tmp_path, monkeypatch, margin, positive_run):
  """The corpus embedded into shards of 10 rows, searched 7 at a time (the margin's
  positives read in runs of up to 3 rows, or all at once): the negatives are numpy's over
  embeddings made in memory; 3 queries a batch (3 does not divide 9) write the same file as
  all at once."""
  monkeypatch.setattr(mine, "POSITIVE_RUN", positive_run)
  files = _dense_files(tmp_path)
  out = tmp_path / "mined.jsonl"
  counts = _mine_dense(tiny_run, files, out, top_n=5, skip_top=1, margin=margin)
  assert counts == {"pairs": 10, "queries": 9, "corpus": 34, "short": 0}
  got = _read_jsonl(out)
  assert [(g["query"], g["passage"]) for g in got] == DENSE_PAIRS
  assert [g["negatives"] for g in got] == _dense_reference(tiny_run, DENSE_EXTRA, 5, 1,
                                                           margin)
  assert (tmp_path / "mined.jsonl.embeddings" / "meta.json").is_file()
  whole = out.read_text()
  _mine_dense(tiny_run, files, out, top_n=5, skip_top=1, margin=margin, query_batch=3)
  assert out.read_text() == whole


def test_dense_mining_reuses_its_shards_and_remakes_them_for_other_texts(tiny_run, tmp_path):
  """A second run embeds nothing (the shards' files untouched); a changed corpus text makes
  them again, in the default directory; a named directory of other texts is refused."""
  files = _dense_files(tmp_path)
  out = tmp_path / "mined.jsonl"
  shards = tmp_path / "mined.jsonl.embeddings"
  _mine_dense(tiny_run, files, out, top_n=4)
  assert sorted(p.name for p in shards.glob("shard-*.npy")) == [
      f"shard-0000{i}.npy" for i in range(4)]  # 34 rows, 10 a shard
  written = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*")}
  first = out.read_text()
  _mine_dense(tiny_run, files, out, top_n=4)
  assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*")} == written
  assert out.read_text() == first
  extra = list(DENSE_EXTRA)
  extra[3] = "apple banana apple banana"
  files = _dense_files(tmp_path, extra)
  _mine_dense(tiny_run, files, out, top_n=4)
  remade = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*")}
  assert remade.keys() == written.keys() and all(remade[n] != written[n] for n in written)
  assert [g["negatives"] for g in _read_jsonl(out)] == _dense_reference(tiny_run, extra, 4,
                                                                        0, None)
  files = _dense_files(tmp_path)
  with pytest.raises(data_files.DataError, match=r"meta.json: .*another corpus or model:"
                                                 r" texts_sha256"):
    _mine_dense(tiny_run, files, out, top_n=4, embeddings_dir=str(shards))


@pytest.mark.parametrize("query_batch", [2, 4096])
def test_bm25_mining_is_lucenes_bm25_over_the_whole_corpus(tmp_path, query_batch):
  """The corpus of the dense tests: each pair's negatives are the rule's over Lucene's BM25
  of every document, written out by hand; 2 queries a batch (2 does not divide 9) mine the
  same as all at once."""
  files = _dense_files(tmp_path)
  out = tmp_path / "mined.jsonl"
  counts = mine.mine(input_files=[files[0]], corpus_files=[files[1]], output_file=str(out),
                     method="bm25", top_n=5, skip_top=1, query_batch=query_batch)
  assert counts == {"pairs": 10, "queries": 9, "corpus": 34, "short": 0}
  queries = list(dict.fromkeys(q for q, _ in DENSE_PAIRS))
  corpus = [p for _, p in DENSE_PAIRS] + DENSE_EXTRA
  words = bm25.analyze(corpus)
  positives = {q: {corpus.index(p) for q2, p in DENSE_PAIRS if q2 == q} for q in queries}
  want = [[corpus[d] for d in _reference_pool(
      test_bm25.lucene_bm25(words, bm25.analyze([q])[0]), positives[q], 5, 1, np.inf)]
          for q, _ in DENSE_PAIRS]
  assert [g["negatives"] for g in _read_jsonl(out)] == want


# Slow (two JAX processes): the default run covers mining from shards in one process
# and two processes encoding shards (test_embedding_shards).
@pytest.mark.slow
def test_two_processes_mine_what_one_does(tiny_run, tmp_path):
  """Two JAX processes (2 CPU devices each) embed their own shards of the corpus and search
  them together: the same file as one process of 8 devices."""
  from tests import multiprocess_mine_worker as worker  # pylint: disable=g-import-not-at-top
  from tests import processes  # pylint: disable=g-import-not-at-top
  _dense_files(tmp_path)
  run = tiny_run[1]
  procs = processes.start_workers("tests.multiprocess_mine_worker", worker.NUM_PROCESSES,
                                  tmp_path, f"--run={run}", f"--out={tmp_path}")
  codes, _ = processes.wait_all(procs, 240)
  assert codes == [0] * worker.NUM_PROCESSES, processes.logs(tmp_path)
  assert len(list((tmp_path / "mined.jsonl.embeddings").glob("shard-*.npy"))) == 4
  worker.mine_files(tmp_path, run, tmp_path / "one.jsonl")
  assert (tmp_path / "mined.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
