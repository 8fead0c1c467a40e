"""BEIR folders read, on small fixtures in BEIR's format (tests/format_files.py) and on the
real NFCorpus zip."""

import logging
import zipfile

import pytest

from samtone_jax import beir_format
from samtone_jax.data_files import DataError
from tests import data_errors
from tests.format_files import BEIR_FILES, jsonl, qrels, write


@pytest.fixture
def folder(tmp_path):
  for name, content in BEIR_FILES.items():
    write(tmp_path / "myset" / name, content)
  return tmp_path / "myset"


def test_read_corpus_joins_title_and_text(folder):
  assert beir_format.read_corpus(folder / "corpus.jsonl") == {
      "0012": "Fish oil and the heart.", "12": "Vitamin D Sunlight makes it.",
      "MED-ü": "Café au lait ☕", "e": ""}


def test_read_corpus_without_title_as_beir_loader(tmp_path):
  path = write(tmp_path / "corpus.jsonl", jsonl({"_id": "1", "text": "no title"}))
  assert beir_format.read_corpus(path) == {"1": "no title"}


def test_read_queries(folder):
  assert beir_format.read_queries(folder / "queries.jsonl") == {
      "0012": "fish oil", "7": "vitamin D sources", "8": "unjudged query", "9": "coffee ☕"}


def test_read_qrels_crlf_header_string_ids(folder):
  assert (folder / "qrels/test.tsv").read_bytes().startswith(
      b"query-id\tcorpus-id\tscore\r\n7\t12\t2\r\n")
  assert beir_format.read_qrels(folder / "qrels/test.tsv") == {
      "7": {"12": 2, "0012": 0}, "9": {"MED-ü": 1}}


def test_eval_set_judged_queries_whole_corpus(folder):
  test = beir_format.eval_set(folder)
  assert test.name == "myset/test"
  assert test.queries == {"7": "vitamin D sources", "9": "coffee ☕"}
  assert test.corpus == beir_format.read_corpus(folder / "corpus.jsonl")
  assert test.qrels == beir_format.read_qrels(folder / "qrels/test.tsv")
  assert beir_format.eval_set(folder, split="train", name="x").name == "x"


def test_eval_set_from_the_zip(folder, tmp_path):
  archive = tmp_path / "myset.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    for name in BEIR_FILES:
      zf.write(folder / name, f"myset/{name}")
  assert beir_format.eval_set(f"{archive}/myset") == beir_format.eval_set(folder)


def test_training_pairs_score_above_zero_in_order(folder, caplog):
  with caplog.at_level(logging.WARNING):
    pairs = list(beir_format.iter_training_examples(folder))
  assert pairs == [
      {"query": "coffee ☕", "passage": "Café au lait ☕", "query_id": "9",
       "passage_id": "MED-ü"},
      {"query": "fish oil", "passage": "Fish oil and the heart.", "query_id": "0012",
       "passage_id": "0012"},
      {"query": "vitamin D sources", "passage": "Vitamin D Sunlight makes it.",
       "query_id": "7", "passage_id": "12"},
  ]
  assert "dropped 1 training examples" in caplog.text


@pytest.mark.parametrize("content, line, message", [
    ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"\n', 2, "not valid JSON"),
    ('{"_id": "1", "text": "a"}\n\n{"_id": "2", "title": "t"}\n', 3, "missing field 'text'"),
    ('{"_id": 12, "text": "a"}\n', 1, "field '_id' must be str, got int"),
    ('{"_id": "1", "title": null, "text": "a"}\n', 1, "field 'title' must be str"),
    ('["_id", "text"]\n', 1, "expected a JSON object, got list"),
    ('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n{"_id": "1", "text": "c"}\n', 3,
     "_id '1' again (first on line 1)"),
    (b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": "\xe9"}\n', 2, "not UTF-8"),
])
def test_bad_corpus(tmp_path, content, line, message):
  path = write(tmp_path / "corpus.jsonl", content)
  error = data_errors.raised(beir_format.read_corpus, path)
  assert (error.path, error.line) == (str(path), line)
  assert message in str(error) and str(error).startswith(f"{path}:{line}: ")


def test_bad_queries(tmp_path):
  path = write(tmp_path / "queries.jsonl", '{"_id": "1", "text": "a"}\n{"_id": "2"}\n')
  error = data_errors.raised(beir_format.read_queries, path)
  assert (error.path, error.line) == (str(path), 2) and "missing field 'text'" in str(error)


@pytest.mark.parametrize("content, line, message", [
    ("7\t12\t1\r\n", 1, "expected the header ['query-id', 'corpus-id', 'score']"),
    (qrels(("7", "12", 1)) + "7\t13\r\n", 3, "expected 3 tab-separated fields, got 2"),
    (qrels(("7", "12", 1), ("7", "13", "1.0")), 3, "the score '1.0' is not an integer"),
    (qrels(("7", "12", 1), ("8", "12", 1), ("7", "12", 2)), 4, "judged 2, but 1 on line 2"),
])
def test_bad_qrels(tmp_path, content, line, message):
  path = write(tmp_path / "test.tsv", content)
  error = data_errors.raised(beir_format.read_qrels, path)
  assert (error.path, error.line) == (str(path), line)
  assert message in str(error)


@pytest.mark.parametrize("row, message", [
    (("9", "13", 1), "unknown document id '13'"),
    (("007", "12", 1), "unknown query id '007'"),
])
def test_training_unknown_id(folder, row, message):
  path = write(folder / "qrels/train.tsv", qrels(("7", "12", 1), row))
  error = data_errors.raised(beir_format.iter_training_examples, folder)
  assert (error.path, error.line) == (str(path), 3) and message in str(error)


def test_eval_set_unknown_document(folder):
  write(folder / "qrels/test.tsv", qrels(("7", "12", 1), ("7", "13", 1)))
  with pytest.raises(DataError, match=r"1 unknown document ids \(e.g. \['13'\]\)"):
    beir_format.eval_set(folder)


def test_missing_files(folder):
  with pytest.raises(DataError, match=r"dev\.tsv: file not found"):
    beir_format.eval_set(folder, split="dev")
  archive = folder.parent / "myset.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    zf.write(folder / "queries.jsonl", "myset/queries.jsonl")
  with pytest.raises(DataError, match=r"no member 'myset/qrels/test.tsv'"):
    beir_format.eval_set(archive / "myset")


def test_nfcorpus_test_split_from_the_zip(shared_data):
  """The published figures of NFCorpus (BEIR's paper, table 1): 3,633 documents, 323 test
  queries; its 12,334 test judgments all name known queries and documents."""
  folder = shared_data / "beir" / "nfcorpus.zip" / "nfcorpus"
  test = beir_format.eval_set(folder)
  assert test.name == "nfcorpus/test"
  assert (len(test.corpus), len(test.queries), len(test.qrels)) == (3633, 323, 323)
  assert sum(len(judged) for judged in test.qrels.values()) == 12334
  assert {score for judged in test.qrels.values() for score in judged.values()} == {1, 2}
  assert test.corpus["MED-10"].startswith(
      "Statin Use and Breast Cancer Survival: A Nationwide Cohort Study from Finland Recent")
  pairs = beir_format.iter_training_examples(folder)
  assert next(pairs)["query_id"] == "PLAIN-3"
