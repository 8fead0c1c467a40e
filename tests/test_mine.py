"""Mining negatives (BM25 and dense) and the BM25 baseline, against written-out references."""

import json

import numpy as np
import pytest

from samtone_jax import bm25, data_files, metrics, mine

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
