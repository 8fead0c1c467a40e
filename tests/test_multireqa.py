"""MultiReQA from MRQA files: fixtures in the published formats (tests/format_files.py),
and the real SQuAD / BioASQ."""

import gzip
import json
import logging

import pytest

from samtone_jax.data_files import DataError, normalize_text
from samtone_jax.tasks import multireqa
from tests.format_files import (A_QAS, A_SENTENCES, A_TEXT, B_SENTENCES, B_TEXT, C_TEXT,
                                CANDIDATES, KEY_A, KEY_B, KEY_ORPHAN, MRQA_RECORDS, qa,
                                write_json_lines)


@pytest.fixture
def files(tmp_path):
  return (write_json_lines(tmp_path / "SQuAD.jsonl.gz", MRQA_RECORDS),
          write_json_lines(tmp_path / "candidates.json.gz", CANDIDATES))


def test_fixture_candidates_are_sorted_as_strings():
  ids = [r["candidate_id"] for r in CANDIDATES]
  assert ids.index(f"{KEY_A}/_10") < ids.index(f"{KEY_A}/_2")


def test_read_mrqa(files):
  contexts = list(multireqa.read_mrqa(files[0]))
  assert [c.line for c in contexts] == [2, 3, 4]
  assert [c.context for c in contexts] == [A_TEXT, B_TEXT, C_TEXT]
  a2 = contexts[0].questions[1]
  assert (a2.qid, a2.text) == ("a2", "What lies on the lake?")
  assert [A_TEXT[start:end] for start, end in a2.spans] == ["Lake Zürich", "The lake"]
  assert a2.spans[0] == (A_TEXT.index("Lake"), A_TEXT.index("Lake") + len("Lake Zürich"))


def test_read_mrqa_without_header(tmp_path):
  path = write_json_lines(tmp_path / "sample.jsonl", MRQA_RECORDS[1:])
  assert [c.line for c in multireqa.read_mrqa(path)] == [1, 2, 3]


def test_read_candidates_orders_by_offset(files):
  groups = multireqa.read_candidates(files[1])
  assert set(groups) == {KEY_A, KEY_B, KEY_ORPHAN}
  assert [c.candidate_id for c in groups[KEY_A]] == [f"{KEY_A}/_{i}" for i in (0, 2, 10)]
  assert [A_TEXT[c.start:c.end] for c in groups[KEY_A]] == list(A_SENTENCES)


def test_hotpotqa_paragraph_sentence_ids(tmp_path):
  context = "First paragraph. Second sentence. Another paragraph."
  path = write_json_lines(tmp_path / "candidates.json.gz", [
      {"candidate_id": "HotpotQA_h1/h2/_0_0", "response_start": 0, "response_end": 16},
      {"candidate_id": "HotpotQA_h1/h2/_0_1", "response_start": 17, "response_end": 33},
      {"candidate_id": "HotpotQA_h1/h2/_1_0", "response_start": 34, "response_end": 52},
  ])
  groups = multireqa.read_candidates(path)
  assert list(groups) == ["HotpotQA_h1/h2"]
  assert [context[c.start:c.end] for c in groups["HotpotQA_h1/h2"]] == [
      "First paragraph.", "Second sentence.", "Another paragraph."]
  mrqa = write_json_lines(tmp_path / "HotpotQA.jsonl", [
      {"context": context, "qas": [qa("h2", "Which sentence?", ("Second", context)),
                                   qa("h1", "Which paragraph?", ("Another", context))]}])
  _, eval_set, _ = multireqa.build(mrqa, path, "hotpot")
  assert eval_set.qrels == {"h2": {"HotpotQA_h1/h2/_0_1": 1}, "h1": {"HotpotQA_h1/h2/_1_0": 1}}


def test_build(files, caplog):
  with caplog.at_level(logging.INFO):
    pairs, eval_set, stats = multireqa.build(*files, "fixture")
  a, b = f"{KEY_A}/_", f"{KEY_B}/_"
  assert eval_set.name == "fixture"
  assert eval_set.corpus == {a + "0": A_SENTENCES[0], a + "2": A_SENTENCES[1],
                             a + "10": A_SENTENCES[2], b + "0": B_SENTENCES[0],
                             b + "1": B_SENTENCES[1]}
  # a3 crosses a sentence boundary: dropped. b1 is a4's text: merged into a4.
  assert eval_set.queries == {"a1": A_QAS[0]["question"], "a2": A_QAS[1]["question"],
                              "a4": "How long is the lake?", "b2": "Is the water clean?"}
  assert eval_set.qrels == {"a1": {a + "0": 1}, "a2": {a + "2": 1, a + "10": 1},
                            "a4": {a + "10": 1, b + "0": 1}, "b2": {b + "1": 1}}
  assert [(p["query_id"], p["passage_id"]) for p in pairs] == [
      ("a1", a + "0"), ("a2", a + "2"), ("a2", a + "10"), ("a4", a + "10"), ("a4", b + "0"),
      ("b2", b + "1")]
  assert pairs[4] == {"query": "How long is the lake?", "passage": "The lake is 40 km long.",
                      "query_id": "a4", "passage_id": b + "0"}
  assert stats == {"contexts": 3, "contexts_unmatched": 1, "groups_unmatched": 1,
                   "questions": 7, "questions_unmatched": 1, "dropped": 1, "merged": 1,
                   "queries": 4, "sentences": 5, "pairs": 6}
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 2
  assert "1 contexts" in warnings[0] and "lines [4]" in warnings[0]
  assert "1 candidate groups" in warnings[1] and KEY_ORPHAN in warnings[1]
  assert any("7 questions read: 1 dropped" in r.getMessage() for r in caplog.records)


def test_build_is_deterministic(files):
  assert multireqa.build(*files) == multireqa.build(*files)


def test_sentence_past_its_context(tmp_path):
  mrqa = write_json_lines(tmp_path / "m.jsonl", [{"context": "Short.", "qas": [
      qa("q1", "What?", ("Short", "Short."))]}])
  candidates = write_json_lines(tmp_path / "c.jsonl", [
      {"candidate_id": "SQuAD_q1/_0", "response_start": 0, "response_end": 6},
      {"candidate_id": "SQuAD_q1/_1", "response_start": 7, "response_end": 20}])
  with pytest.raises(DataError, match=r"c\.jsonl:2: .*past the end"):
    multireqa.build(mrqa, candidates)


def test_repeated_qid(tmp_path):
  record = {"context": "Short.", "qas": [qa("q1", "What?", ("Short", "Short."))]}
  mrqa = write_json_lines(tmp_path / "m.jsonl", [record, record])
  candidates = write_json_lines(tmp_path / "c.jsonl", [
      {"candidate_id": "SQuAD_q1/_0", "response_start": 0, "response_end": 6}])
  with pytest.raises(DataError, match=r"m\.jsonl:2: qid q1 appears twice"):
    multireqa.build(mrqa, candidates)


GOOD_QA = qa("q1", "What?", ("Short", "Short."))


@pytest.mark.parametrize("line, match", [
    ('{"context": "Short.", "qas": [', "not valid JSON"),
    ('{"qas": []}', "missing field 'context'"),
    ('{"context": 5, "qas": []}', "field 'context' must be str"),
    (json.dumps({"context": "Short.", "qas": [{**GOOD_QA, "qid": 7}]}),
     "field 'qid' must be str"),
    (json.dumps({"context": "Short.", "qas": [{k: v for k, v in GOOD_QA.items()
                                              if k != "detected_answers"}]}),
     "missing field 'detected_answers'"),
    (json.dumps({"context": "Short.", "qas": [{**GOOD_QA, "detected_answers": [
        {"char_spans": [[0, 6]]}]}]}), "field 'char_spans' holds \\[0, 6\\]"),
    (json.dumps({"context": "Short.", "qas": [{**GOOD_QA, "detected_answers": [
        {"char_spans": [[0]]}]}]}), "field 'char_spans' holds \\[0\\]"),
    ("[1, 2]", "expected a JSON object"),
])
def test_read_mrqa_errors(tmp_path, line, match):
  path = write_json_lines(tmp_path / "bad.jsonl.gz", [MRQA_RECORDS[0], MRQA_RECORDS[1], line])
  with pytest.raises(DataError, match=match) as error:
    list(multireqa.read_mrqa(path))
  assert (error.value.path, error.value.line) == (str(path), 3)
  assert str(error.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize("line, match", [
    ('{"candidate_id": "SQuAD_q1/_1", ', "not valid JSON"),
    ('{"candidate_id": "SQuAD_q1/_1", "response_start": 7}', "missing field 'response_end'"),
    ('{"candidate_id": "SQuAD_q1/_1", "response_start": "7", "response_end": 9}',
     "field 'response_start' must be int"),
    ('{"candidate_id": ["SQuAD_q1/_1"], "response_start": 7, "response_end": 9}',
     "field 'candidate_id' must be str"),
    ('{"candidate_id": "SQuAD_q1_1", "response_start": 7, "response_end": 9}',
     "is not '<Subset>_<qid>/.../_<sentence>'"),
    ('{"candidate_id": "SQuAD_q1/_0", "response_start": 7, "response_end": 9}',
     "repeats an earlier line"),
    ('{"candidate_id": "SQuAD_q1/_1", "response_start": 9, "response_end": 7}',
     "not 0 <= start <= end"),
])
def test_read_candidates_errors(tmp_path, line, match):
  path = write_json_lines(tmp_path / "candidates.json.gz", [
      {"candidate_id": "SQuAD_q1/_0", "response_start": 0, "response_end": 6}, line])
  with pytest.raises(DataError, match=match) as error:
    multireqa.read_candidates(path)
  assert (error.value.path, error.value.line) == (str(path), 2)


@pytest.mark.parametrize("reader, content", [
    (multireqa.read_mrqa, b'{"header": {}}\n{"context": "caf\xe9", "qas": []}\n'),
    (multireqa.read_candidates, b'{"candidate_id": "SQuAD_q1/_0", "response_start": 0,'
                                b' "response_end": 6}\n{"candidate_id": "SQuAD_q\xe9/_0"}\n'),
])
def test_not_utf8(tmp_path, reader, content):
  path = tmp_path / "bad.jsonl.gz"
  with gzip.open(path, "wb") as f:
    f.write(content)  # \xe9 is Latin-1, not UTF-8
  with pytest.raises(DataError, match="not UTF-8") as error:
    list(reader(path))
  assert (error.value.path, error.value.line) == (str(path), 2)


def test_paths(tmp_path):
  assert multireqa.paths(tmp_path, "SQuAD", "train") == (
      str(tmp_path / "mrqa/train/SQuAD.jsonl.gz"),
      str(tmp_path / "multireqa/data/train/SQuAD/candidates.json.gz"))
  assert multireqa.paths(tmp_path, "SQuAD", "dev") == (
      str(tmp_path / "mrqa/dev/SQuAD.jsonl.gz"),
      str(tmp_path / "multireqa/data/dev/SQuAD/candidates.json.gz"))
  assert multireqa.paths(tmp_path, "BioASQ", "test") == (
      str(tmp_path / "mrqa/dev/BioASQ.jsonl.gz"),
      str(tmp_path / "multireqa/data/test/BioASQ/candidates.json.gz"))
  with pytest.raises(ValueError, match="splits \\('test',\\)"):
    multireqa.paths(tmp_path, "BioASQ", "train")
  with pytest.raises(ValueError, match="unknown MultiReQA subset"):
    multireqa.paths(tmp_path, "DROP", "dev")


# Real data: the MRQA dev files and MultiReQA's sentence boundaries, as published.


def _answers_by_query(mrqa_path, eval_set):
  """Query id -> every answer text (lower case) of its questions, read with json alone."""
  answers = {}
  with gzip.open(mrqa_path, "rt", encoding="utf-8") as f:
    for line in f:
      for entry in json.loads(line).get("qas", []):
        answers.setdefault(normalize_text(entry["question"]), set()).update(
            a["text"].lower() for a in entry["detected_answers"])
  return {qid: answers[normalize_text(text)] for qid, text in eval_set.queries.items()}


def _build_real(shared_data, subset, split, caplog, min_holding):
  """Builds a real set; checks the properties every MultiReQA set has; returns the stats."""
  mrqa_path, candidates_path = multireqa.paths(shared_data, subset, split)
  with caplog.at_level(logging.INFO):
    pairs, eval_set, stats = multireqa.build(mrqa_path, candidates_path, subset)
  numbers = (f"{subset}: {stats['questions']} questions, {stats['queries']} unique queries,"
             f" {stats['merged']} merged, {stats['dropped']} dropped,"
             f" {stats['sentences']} sentences, {stats['pairs']} pairs")
  logging.info(numbers)
  assert any(f"{stats['questions']} questions read" in r.getMessage()
             for r in caplog.records), numbers
  assert stats["contexts_unmatched"] == stats["groups_unmatched"] == 0, numbers
  assert set(eval_set.qrels) == set(eval_set.queries), numbers  # every query is judged
  assert all(eval_set.qrels.values()), numbers
  assert len(pairs) == sum(map(len, eval_set.qrels.values())) == stats["pairs"], numbers
  # A relevant sentence holds one of its query's answer texts, in nearly every pair: the
  # spans decide, and MRQA's answer texts are not always the context's characters (BioASQ:
  # "The neutrophil elastase gene (ELANE)" for the span "Neutrophil elastase gene (ELANE").
  answers = _answers_by_query(mrqa_path, eval_set)
  holding = sum(any(a in p["passage"].lower() for a in answers[p["query_id"]]) for p in pairs)
  assert holding >= min_holding * len(pairs), (holding, numbers)
  return stats, numbers


def test_real_squad_dev(shared_data, caplog):
  stats, numbers = _build_real(shared_data, "SQuAD", "dev", caplog, 0.999)
  assert stats["questions"] == 10507, numbers  # the MRQA dev file
  assert stats["sentences"] == 10642, numbers  # the lines of MultiReQA's candidates file
  assert stats["dropped"] < 0.01 * stats["questions"], numbers


def test_real_bioasq(shared_data, caplog):
  stats, numbers = _build_real(shared_data, "BioASQ", "test", caplog, 0.97)
  assert stats["questions"] == 1504 and stats["sentences"] == 14158, numbers
  # BioASQ asks the same questions of many abstracts: merging makes them few queries.
  assert stats["queries"] < stats["questions"] / 4, numbers
