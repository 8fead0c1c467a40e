"""The MS MARCO readers, on small fixtures written in the official file formats
(tests/format_files.py)."""

import logging
import zipfile

import pytest

from samtone_jax.data_files import DataError
from samtone_jax.tasks import msmarco
from tests import data_errors
from tests.format_files import MOJIBAKE, MSMARCO_FILES, write


@pytest.fixture
def data_dir(tmp_path):
  for name, content in MSMARCO_FILES.items():
    write(tmp_path / name, content)
  return tmp_path


def test_files_name_the_official_files():
  assert msmarco.FILES["collection"] == "collection.tsv"
  assert msmarco.FILES["qrels.dev"] == "qrels.dev.tsv"
  assert msmarco.FILES["triples"] == "triples.train.small.tsv"
  assert msmarco.FILES["qidpidtriples"] == "qidpidtriples.train.full.2.tsv"


def test_read_collection_keeps_pids_and_bytes(data_dir):
  collection = msmarco.read_collection(data_dir / "collection.tsv")
  assert list(collection) == ["7", "1000", "42", "3", "99"]
  assert collection["1000"] == "Le cafÃ© au lait "
  assert collection["1000"].encode("utf-8") == b"Le " + MOJIBAKE + b" au lait "
  assert collection["99"] == ""


def test_read_queries_strips_surrounding_whitespace(data_dir):
  queries = msmarco.read_queries(data_dir / "queries.train.tsv")
  assert queries == {"1": "what colour is the sky", "2": "is grass\u00a0green", "5": ""}


def test_read_qrels_tab_and_space_separated(data_dir):
  assert msmarco.read_qrels(data_dir / "qrels.train.tsv") == {
      "1": {"1000": 1, "7": 1}, "2": {"42": 1, "99": 1}, "5": {"3": 1}}
  assert msmarco.read_qrels(data_dir / "qrels.dev.tsv") == {
      "10": {"3": 1}, "12": {"42": 1, "7": 1}}


def test_read_qrels_trec_dl_keeps_label_zero(tmp_path):
  path = write(tmp_path / "2019qrels-pass.txt",
                "19335 Q0 1017759 0\n19335 Q0 1082489 1\n47923 Q0 1006732 3\n"
                "47923 Q0 1006732 3\n")
  assert msmarco.read_qrels(path) == {
      "19335": {"1017759": 0, "1082489": 1}, "47923": {"1006732": 3}}


def test_ids_stay_strings(tmp_path):
  path = write(tmp_path / "queries.dev.tsv", "007\tq\n7\tr\n")
  assert msmarco.read_queries(path) == {"007": "q", "7": "r"}


def test_training_pairs_in_qrels_order_drop_empty_texts(data_dir, caplog):
  with caplog.at_level(logging.WARNING):
    examples = list(msmarco.iter_training_examples(data_dir))
  assert examples == [
      {"query": "what colour is the sky", "passage": "Le cafÃ© au lait ", "query_id": "1",
       "passage_id": "1000"},
      {"query": "is grass\u00a0green", "passage": "Grass is green.", "query_id": "2",
       "passage_id": "42"},
      {"query": "what colour is the sky", "passage": "The sky is blue.", "query_id": "1",
       "passage_id": "7"},
  ]
  assert "dropped 2 training examples" in caplog.text


def test_training_text_triples(data_dir, caplog):
  with caplog.at_level(logging.WARNING):
    examples = list(msmarco.iter_training_examples(data_dir, negatives="triples"))
  assert examples == [{"query": "what colour is the sky", "passage": "The sky is blue.",
                       "negative": "Grass is green.", "query_id": "", "passage_id": "",
                       "negative_id": ""}]
  assert "dropped 1 training examples" in caplog.text


def test_training_id_triples(data_dir):
  examples = list(msmarco.iter_training_examples(data_dir, negatives="qidpidtriples"))
  assert examples == [
      {"query": "what colour is the sky", "passage": "The sky is blue.",
       "negative": "Grass is green.", "query_id": "1", "passage_id": "7", "negative_id": "42"},
      {"query": "is grass\u00a0green", "passage": "Grass is green.",
       "negative": "Le cafÃ© au lait ", "query_id": "2", "passage_id": "42",
       "negative_id": "1000"},
  ]


def test_bad_negatives_option(data_dir):
  with pytest.raises(ValueError, match="negatives must be one of"):
    msmarco.iter_training_examples(data_dir, negatives="bm25")


def test_eval_set_judged_queries_whole_collection(data_dir):
  dev = msmarco.eval_set(data_dir)
  assert dev.name == "msmarco/dev"
  assert dev.queries == {"10": "what is wet", "12": "colour of\u00a0grass"}
  assert dev.corpus == msmarco.read_collection(data_dir / "collection.tsv")
  assert dev.qrels == {"10": {"3": 1}, "12": {"42": 1, "7": 1}}


def test_eval_set_inside_a_zip(data_dir, tmp_path):
  archive = tmp_path / "msmarco.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    for name in MSMARCO_FILES:
      zf.write(data_dir / name, f"msmarco/{name}")
  assert msmarco.eval_set(f"{archive}/msmarco") == msmarco.eval_set(data_dir)


def test_eval_set_bad_split(data_dir):
  with pytest.raises(ValueError, match="split must be one of"):
    msmarco.eval_set(data_dir, split="eval")


@pytest.mark.parametrize("name, content, line, message", [
    ("collection.tsv", "7\tok\n8\ttab\tinside\n", 2, "expected 2 tab-separated fields, got 3"),
    ("collection.tsv", "7\tok\n8 spaces, no tab\n", 2, "expected 2 tab-separated fields, got 1"),
    ("collection.tsv", b"7\tok\n8\tok\n9\t\xff\xfe\n", 3, "not UTF-8"),
    ("collection.tsv", "7\ta\n8\tb\n7\tc\n", 3, "id '7' again (first on line 1)"),
    ("collection.tsv", "7\ta\n\tb\n", 2, "empty id"),
    ("queries.dev.tsv", "1\ta\n1\t b\n", 2, "id '1' again (first on line 1)"),
])
def test_bad_collection_or_queries(tmp_path, name, content, line, message):
  path = write(tmp_path / name, content)
  read = msmarco.read_collection if name == "collection.tsv" else msmarco.read_queries
  error = data_errors.raised(read, path)
  assert (error.path, error.line) == (str(path), line)
  assert message in str(error) and str(error).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("content, line, message", [
    ("1 0 7 1\n1 0 8\n", 2, "expected 4 tab-separated fields, got 3"),
    ("1\t0\t7\t1\n1\t0\t8\tyes\n", 2, "the label 'yes' is not an integer"),
    ("1 0 7 1\n2 0 7 1\n1 0 7 0\n", 3, "judged 0, but 1 on line 1"),
    (b"1 0 7 1\n\xc3\x28 0 7 1\n", 2, "not UTF-8"),
])
def test_bad_qrels(tmp_path, content, line, message):
  path = write(tmp_path / "qrels.dev.tsv", content)
  error = data_errors.raised(msmarco.read_qrels, path)
  assert (error.path, error.line) == (str(path), line)
  assert message in str(error)


@pytest.mark.parametrize("name, content, negatives, line, message", [
    ("qrels.train.tsv", "1\t0\t7\t1\n1\t0\t8\t1\n", None, 2, "unknown passage id '8'"),
    ("qrels.train.tsv", "1\t0\t7\t1\n0001\t0\t7\t1\n", None, 2, "unknown query id '0001'"),
    ("qidpidtriples.train.full.2.tsv", "1\t7\t42\n1\t7\t43\n", "qidpidtriples", 2,
     "unknown passage id '43'"),
    ("qidpidtriples.train.full.2.tsv", "1\t7\t42\n1\t7\n", "qidpidtriples", 2,
     "expected 3 tab-separated fields, got 2"),
    ("triples.train.small.tsv", "q\tp\tn\nq\tp\n", "triples", 2,
     "expected 3 tab-separated fields, got 2"),
])
def test_bad_training_files(data_dir, name, content, negatives, line, message):
  path = write(data_dir / name, content)
  error = data_errors.raised(msmarco.iter_training_examples, data_dir, negatives=negatives)
  assert (error.path, error.line) == (str(path), line)
  assert message in str(error)


def test_eval_set_unknown_passage(data_dir):
  write(data_dir / "qrels.dev.tsv", "10 0 3 1\n12 0 4242 1\n")
  with pytest.raises(DataError,
                     match=r"qrels.dev.tsv: .*1 unknown document ids \(e.g. \['4242'\]"):
    msmarco.eval_set(data_dir)


@pytest.mark.parametrize("read", [
    lambda d: msmarco.read_collection(d / "absent.tsv"),
    lambda d: msmarco.eval_set(d, split="dev.small"),
    lambda d: list(msmarco.iter_training_examples(d / "absent")),
])
def test_missing_file(data_dir, read):
  with pytest.raises(DataError, match=r"\.tsv: file not found"):
    read(data_dir)
