r"""Pairs files: your own training pairs, one example a line, read into examples.

Either form (`.gz` and zip members too):

- JSON lines: {"query": "...", "passage": "..."} (or "positive" for "passage"), and
  optionally "negatives": ["...", ...], a list of any length, and ids (strings or ints):
  "query_id", "passage_id" with "negative_ids" (one a negative). Where given, ids name the
  items for masking in place of their texts: two lines with one query_id are one query, and
  a negative with the passage_id of one of its positives leaves the loss. Every line of a
  split's files gives the same id fields, or none;
- TSV: `query<TAB>passage`, optionally followed by negatives, one a column (every line of
  a file with as many columns as its first).

Training reads them through the task `own_pairs` (tasks/own_data.py); mining
(samtone_jax/mine.py) reads them directly.
"""

import pathlib
from typing import Any, Iterator

from samtone_jax import data_files

ID_FIELDS = ("query_id", "passage_id", "negative_ids")


def _jsonl_example(record: Any, path: Any, line: int) -> dict[str, Any]:
  if not isinstance(record, dict):
    raise data_files.DataError(path, line, f"expected a JSON object, got"
                                           f" {type(record).__name__}.")
  name = "passage" if "passage" in record else "positive"
  if name not in record:
    raise data_files.DataError(path, line, "missing field 'passage' (or 'positive').")
  example = {"query": data_files.field(record, "query", str, path, line),
             "passage": data_files.field(record, name, str, path, line), "negatives": []}
  if "negatives" in record:
    negatives = data_files.field(record, "negatives", list, path, line)
    if not all(isinstance(n, str) for n in negatives):
      raise data_files.DataError(path, line, "field 'negatives' must be a list of strings.")
    example["negatives"] = negatives
  for name in ID_FIELDS:
    if name in record:
      example[name] = _id(record[name], name, path, line)
  if "negative_ids" in example and len(example["negative_ids"]) != len(example["negatives"]):
    raise data_files.DataError(path, line, f"field 'negative_ids' has"
                                           f" {len(example['negative_ids'])} ids for"
                                           f" {len(example['negatives'])} negatives.")
  if ("passage_id" in example) != ("negative_ids" in example) and example["negatives"]:
    raise data_files.DataError(path, line, "'passage_id' and 'negative_ids' go together:"
                                           " a negative is known to be a positive by its id.")
  return example


def id_fields(example: dict[str, Any]) -> list[str]:
  """Which of "query_id" and "passage_id" an example gives (its negative_ids go with the
  latter)."""
  return [name for name in ID_FIELDS[:2] if name in example]


def check_id_fields(path: Any, ids: list[str], first_path: Any,
                    first_ids: list[str]) -> None:
  """DataError unless a file gives the id fields of the first file read with it."""
  if ids != first_ids:
    raise data_files.DataError(path, None, f"id fields {ids} where {first_path} has"
                                           f" {first_ids}: give ids in every file or none.")


def _is_id(value: Any) -> bool:
  return isinstance(value, (str, int)) and not isinstance(value, bool)


def _id(value: Any, name: str, path: Any, line: int) -> Any:
  """An id field's value, checked: a string or an int; for negative_ids a list of them."""
  if name == "negative_ids":
    if not isinstance(value, list) or not all(map(_is_id, value)):
      raise data_files.DataError(path, line, f"field 'negative_ids' must be a list of"
                                             f" strings or ints, got {value!r}.")
    return value
  if not _is_id(value):
    raise data_files.DataError(path, line, f"field {name!r} must be a string or an int, got"
                                           f" {value!r}.")
  return value


def id_text(value: Any) -> Any:
  """An id (str or int) as text, by which it names its item ("7" and 7 are one); a list of
  ids as a list of texts."""
  return [str(v) for v in value] if isinstance(value, list) else str(value)


def _tsv_examples(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
  columns = None
  for line_no, line in data_files.iter_lines(path):
    if not line.strip():
      continue
    fields = line.split("\t")
    columns = columns or len(fields)
    if len(fields) < 2 or len(fields) != columns:
      raise data_files.DataError(path, line_no, f"expected {max(columns, 2)} tab-separated"
                                                f" fields (query, passage, negatives...),"
                                                f" got {len(fields)}: {line[:200]!r}.")
    yield line_no, {"query": fields[0], "passage": fields[1], "negatives": fields[2:]}


def read_examples(path: str) -> Iterator[dict[str, Any]]:
  """The examples of one file: {"query", "passage", "negatives": [str]} and, where the
  lines give them, "query_id", "passage_id", "negative_ids": [str or int] (ids as given;
  `id_text` makes them the text that names the item).

  Raises:
    data_files.DataError: `file:line` and what is wrong (not JSON, a missing or mistyped
      field, a TSV line with another number of columns, ids on some lines only).
  """
  name = pathlib.PurePath(path).name.removesuffix(".gz")
  if name.endswith((".jsonl", ".json")):
    lines = ((n, _jsonl_example(r, path, n)) for n, r in data_files.iter_jsonl(path))
  elif name.endswith((".tsv", ".txt")):
    lines = _tsv_examples(path)
  else:
    raise data_files.DataError(path, None, "expected a .jsonl or .tsv file (or .gz of one).")
  first = None
  for line, example in lines:
    ids = id_fields(example)
    first = ids if first is None else first
    if ids != first:
      raise data_files.DataError(path, line, f"id fields {ids} where the first line has"
                                             f" {first}: give ids on every line or none.")
    yield example
