"""Pairs files: a line that does not read as its format says stops naming the file and line."""

import pytest

from samtone_jax import data_files, pairs_format


@pytest.mark.parametrize("text, message", [
    ('{"query": "a", "passage": "b"}\n{"query": "a"', r"train.jsonl:2: not valid JSON"),
    ('{"query": "a"}', r"train.jsonl:1: missing field 'passage' \(or 'positive'\)"),
    ('{"query": 3, "passage": "b"}', r"train.jsonl:1: field 'query' must be str, got int"),
    ('{"query": "a", "passage": "b", "negatives": "c"}',
     r"train.jsonl:1: field 'negatives' must be list"),
    ('{"query": "a", "passage": "b", "negatives": [1]}',
     r"train.jsonl:1: field 'negatives' must be a list of strings"),
    ('{"query": "a", "passage": "b", "query_id": 1.5}',
     r"train.jsonl:1: field 'query_id' must be a string or an int, got 1.5"),
    ('{"query": "a", "passage": "b", "passage_id": "p", "negatives": ["c"]}',
     r"train.jsonl:1: 'passage_id' and 'negative_ids' go together"),
    ('{"query": "a", "passage": "b", "passage_id": "p", "negatives": ["c"],'
     ' "negative_ids": ["x", "y"]}', r"train.jsonl:1: field 'negative_ids' has 2 ids for 1"),
    ('{"query": "a", "passage": "b", "query_id": 1}\n{"query": "c", "passage": "d"}',
     r"train.jsonl:2: id fields \[\] where the first line has \['query_id'\]"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, text, message):
  path = tmp_path / "train.jsonl"
  path.write_text(text)
  with pytest.raises(data_files.DataError, match=message):
    list(pairs_format.read_examples(str(path)))


def test_a_tsv_line_of_another_width_and_an_unknown_suffix(tmp_path):
  (tmp_path / "a.tsv").write_text("q\tp\tn\nq\tp\n")
  with pytest.raises(data_files.DataError, match=r"a.tsv:2: expected 3 tab-separated fields"):
    list(pairs_format.read_examples(str(tmp_path / "a.tsv")))
  with pytest.raises(data_files.DataError, match=r"expected a .jsonl or .tsv file"):
    list(pairs_format.read_examples(str(tmp_path / "a.csv")))
