"""Reading published data files: line-numbered errors, text normalisation, evaluation sets.

Every reader (samtone_jax/beir_format.py, pairs_format.py, the sources of tasks/) goes
through these helpers, so that a bad file stops with the same kind of message everywhere:
`DataError: <file>:<line>: <what is wrong>`.

- `data_root()`: where downloaded official files are looked for ($SAMTONE_DATA_DIR).

- `iter_lines(path)`: text lines of a plain, gzipped (.gz) file, or of a member of a .zip
  (`archive.zip/inner/path`), decoded as UTF-8, with their 1-based line numbers.
- `iter_jsonl(path)`: JSON objects, one a line (blank lines skipped).
- `iter_tsv(path, columns)`: tab-separated fields, a fixed number a line.
- `parse_qrels_line(...)`, `iter_qrels(path, format)`: the judgments of a qrels file, TREC
  (`qid 0 pid label`, MS MARCO) or BEIR (`query-id<TAB>corpus-id<TAB>score`, a header).
- `drop_empty(examples, source)`: training examples without empty texts (dropped, or removed
  from a pool of negatives), counted.
- `normalize_text(text)`: the form in which texts count as equal.
- `RetrievalSet`: queries, corpus and qrels of an evaluation set.
"""

import dataclasses
import gzip
import json
import logging
import os
import pathlib
import re
import unicodedata
import zipfile
import zlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

# What gzip, zlib and zipfile raise for a damaged or truncated archive (zipfile: RuntimeError
# for a member marked encrypted, NotImplementedError for an unknown compression method).
_DAMAGED = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError,
            NotImplementedError)

DATA_DIR_VARIABLE = "SAMTONE_DATA_DIR"


def data_root() -> pathlib.Path:
  """$SAMTONE_DATA_DIR, or ~/samtone_data: where downloaded official files are looked for."""
  return pathlib.Path(os.environ.get(DATA_DIR_VARIABLE, pathlib.Path.home() / "samtone_data"))


class DataError(ValueError):
  """A published file that does not read as its format says; names the file and line."""

  def __init__(self, path: Any, line: Optional[int], message: str):
    self.path, self.line = str(path), line
    super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")


def _open_binary(path: str):
  """A binary file object for `path`, which may name a member of a zip archive."""
  parts = pathlib.PurePath(path).parts
  for i in range(len(parts) - 1, 0, -1):
    archive = pathlib.Path(*parts[:i])
    if archive.suffix == ".zip" and archive.is_file():
      member = "/".join(parts[i:])
      try:
        return zipfile.ZipFile(archive).open(member)
      except KeyError:
        raise DataError(path, None, f"no member {member!r} in {archive}.") from None
      except _DAMAGED as e:
        raise DataError(path, None, f"cannot read the zip archive {archive} ({e}).") from None
  try:
    return open(path, "rb")
  except FileNotFoundError:
    raise DataError(path, None, "file not found.") from None


def iter_lines(path: Any) -> Iterator[tuple[int, str]]:
  """Yields (line number, line without its line ending) of a text file, UTF-8.

  `.gz` files are decompressed; a path through a `.zip` reads the archive's member. Line
  endings LF and CRLF are both accepted (BEIR's qrels use CRLF).

  Raises:
    DataError: for a missing file, a damaged or truncated gzip stream or zip archive, or
      bytes that are not UTF-8.
  """
  path = str(path)
  raw = _open_binary(path)
  try:
    stream = gzip.open(raw) if path.endswith(".gz") else raw
    line_no = 0
    try:
      for line_no, raw_line in enumerate(stream, start=1):
        try:
          line = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(path, line_no, f"not UTF-8 ({e.reason} at byte {e.start}).") from None
        yield line_no, line.rstrip("\n").rstrip("\r")
    except _DAMAGED as e:  # corrupt or truncated compression
      raise DataError(path, line_no + 1, f"cannot decompress ({e}).") from None
  finally:
    raw.close()


def iter_jsonl(path: Any) -> Iterator[tuple[int, Any]]:
  """Yields (line number, parsed JSON) for each non-blank line of a JSON-lines file."""
  for line_no, line in iter_lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(path, line_no, f"not valid JSON ({e.msg} at column {e.colno}).") from None
    except RecursionError:
      raise DataError(path, line_no, "JSON nested too deeply to read.") from None
    yield line_no, record


def iter_tsv(path: Any, columns: int, header: Optional[tuple[str, ...]] = None,
             separators: str = "\t") -> Iterator[tuple[int, list[str]]]:
  """Yields (line number, fields) of a tab-separated file with `columns` fields a line.

  Args:
    path: the file.
    columns: how many fields every line must have.
    header: if given, the first line must be exactly these names, and is skipped.
    separators: "\\t", or "\\t " to accept tabs or runs of spaces (TREC qrels come both ways).

  Raises:
    DataError: for a line with another number of fields, or a wrong header.
  """
  for line_no, line in iter_lines(path):
    fields = _tsv_fields(line, line_no, path, columns, header, separators)
    if fields is not None:
      yield line_no, fields


def _tsv_fields(line: str, line_no: int, path: Any, columns: int,
                header: Optional[tuple[str, ...]], separators: str) -> Optional[list[str]]:
  """The fields of one line of `iter_tsv`'s files; None for the header and blank lines."""
  if separators == "\t":
    fields = line.split("\t")
  else:
    fields = line.replace("\t", " ").split()
  if line_no == 1 and header is not None:
    if tuple(f.strip() for f in fields) != header:
      raise DataError(path, line_no, f"expected the header {list(header)}, got {fields}.")
    return None
  if not line.strip():
    return None
  if len(fields) != columns:
    raise DataError(path, line_no, f"expected {columns} tab-separated fields, got"
                                   f" {len(fields)}: {line[:200]!r}.")
  return fields


def field(record: Mapping[str, Any], name: str, kind: type, path: Any, line: int) -> Any:
  """record[name], checked to be of `kind`; a DataError names the field otherwise."""
  if not isinstance(record, Mapping):
    raise DataError(path, line, f"expected a JSON object, got {type(record).__name__}.")
  if name not in record:
    raise DataError(path, line, f"missing field {name!r}.")
  value = record[name]
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise DataError(path, line, f"field {name!r} must be {kind.__name__}, got"
                                f" {type(value).__name__}.")
  return value


def drop_empty(examples: Iterable[dict[str, Any]], source: Any) -> Iterator[dict[str, Any]]:
  """The training examples whose texts are all non-blank (only whitespace is blank).

  An example with a blank "query", "passage" or (MS MARCO's one) "negative" is dropped; from
  a pool, "negatives" (with their "negative_ids"), the blank texts are removed and the
  example kept. One warning, when the iteration ends, counts both and names `source`.
  """
  dropped = removed = 0
  try:
    for example in examples:
      if any(_blank(example[k]) for k in ("query", "passage", "negative") if k in example):
        dropped += 1
        continue
      pool = example.get("negatives", ())
      if any(map(_blank, pool)):
        keep = [i for i, text in enumerate(pool) if not _blank(text)]
        removed += len(pool) - len(keep)
        example = dict(example, **{name: [example[name][i] for i in keep]
                                   for name in ("negatives", "negative_ids") if name in example})
      yield example
  finally:
    if dropped or removed:
      logging.warning("%s: dropped %d training examples with an empty text, removed %d empty"
                      " negatives from the pools of others.", source, dropped, removed)


def _blank(text: str) -> bool:
  return _WHITE_SPACE.fullmatch(text) is not None or not text


@dataclasses.dataclass(frozen=True)
class QrelsFormat:
  """How a qrels file lays out its lines (see `QRELS_FORMATS`).

  Attributes:
    columns: fields a line.
    separators: as `iter_tsv`'s.
    header: the first line's field names, or None for a file without header.
    query, document, relevance: the indices of those fields.
    relevance_name: the relevance's name in error messages ("label", "score").
  """
  columns: int
  separators: str
  header: Optional[tuple[str, ...]]
  query: int
  document: int
  relevance: int
  relevance_name: str


QRELS_FORMATS = {
    # TREC (MS MARCO, TREC DL): `qid 0 pid label` (or `Q0`), tabs or runs of spaces.
    "trec": QrelsFormat(columns=4, separators="\t ", header=None, query=0, document=2,
                        relevance=3, relevance_name="label"),
    # BEIR `qrels/<split>.tsv`: a header, then `query-id<TAB>corpus-id<TAB>score`.
    "beir": QrelsFormat(columns=3, separators="\t", header=("query-id", "corpus-id", "score"),
                        query=0, document=1, relevance=2, relevance_name="score"),
}


def parse_qrels_line(line: str, line_no: int, path: Any,
                     qrels_format: str) -> Optional[tuple[str, str, int]]:
  """(query id, document id, relevance) of one line of a qrels file.

  Args:
    line: the line, without its line ending.
    line_no: its 1-based number (line 1 is the header of a format with one).
    path: the file, for error messages.
    qrels_format: a key of `QRELS_FORMATS`: "trec" or "beir".

  Returns:
    The judgment, ids as published (strings, never cast); None for the header or a blank
    line.

  Raises:
    DataError: `<path>:<line>: ...` for a wrong header, a line with another number of
      fields, or a relevance that is not an integer.
  """
  form = QRELS_FORMATS[qrels_format]
  fields = _tsv_fields(line, line_no, path, form.columns, form.header, form.separators)
  if fields is None:
    return None
  relevance = fields[form.relevance]
  try:
    value = int(relevance)
  except ValueError:
    raise DataError(path, line_no, f"the {form.relevance_name} {relevance!r} is not an"
                                   f" integer.") from None
  return fields[form.query], fields[form.document], value


def iter_qrels(path: Any, qrels_format: str) -> Iterator[tuple[int, str, str, int]]:
  """Yields (line number, query id, document id, relevance) of a qrels file.

  Args:
    path: the file (plain, .gz or in a zip, as `iter_lines`).
    qrels_format: "trec" or "beir" (see `QRELS_FORMATS`).

  Raises:
    DataError: as `iter_lines` and `parse_qrels_line`.
  """
  for line_no, line in iter_lines(path):
    judgment = parse_qrels_line(line, line_no, path, qrels_format)
    if judgment is not None:
      yield (line_no, *judgment)


def build_qrels(judgments: Callable[[], Iterable[tuple[int, str, str, int]]],
                path: Any) -> dict[str, dict[str, int]]:
  """{query id: {document id: relevance}} from (line, query id, document id, relevance) rows.

  A pair judged twice with the same relevance is kept once; with different ones it is a
  DataError naming both lines (`judgments()` is read again, only then, to find the first).
  """
  qrels = {}
  for line_no, qid, doc_id, relevance in judgments():
    judged = qrels.setdefault(qid, {})
    if judged.get(doc_id, relevance) != relevance:
      first = next(n for n, q, d, _ in judgments() if (q, d) == (qid, doc_id))
      raise DataError(path, line_no, f"query {qid!r} document {doc_id!r} judged {relevance},"
                                     f" but {judged[doc_id]} on line {first}.")
    judged[doc_id] = relevance
  return qrels


# Unicode's White_Space characters, as a regular expression that Python's `re` and RE2
# (TensorFlow's `tf.strings.regex_replace`) read alike. Not Python's `str.split`, which also
# splits on the separators U+001C..U+001F, nor RE2's `\s`, which misses U+000B and all
# non-ASCII ones.
WHITE_SPACE_RUN = ("[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
                   "\u3000]+")


_WHITE_SPACE = re.compile(WHITE_SPACE_RUN)


def normalize_text(text: str) -> str:
  """NFKC, runs of whitespace (`WHITE_SPACE_RUN`: Unicode's White_Space) to one space,
  stripped: the same rule as the content ids of tasks/preprocessors.content_id."""
  return _WHITE_SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip(" ")


@dataclasses.dataclass
class RetrievalSet:
  """A retrieval evaluation set.

  Attributes:
    queries: query id -> text.
    corpus: document id -> text.
    qrels: query id -> {document id: relevance (int, > 0 relevant)}.
    name: what it is, for logs and metrics.
  """
  queries: dict[str, str]
  corpus: dict[str, str]
  qrels: dict[str, dict[str, int]]
  name: str = ""

  def check(self, source: Any = "") -> "RetrievalSet":
    """Checks that every judged query and document exists; returns self.

    Raises:
      DataError: naming how many qrels ids are unknown and a few of them, or when no query
        is judged at all.
    """
    source = source or self.name
    unknown_q = sorted(q for q in self.qrels if q not in self.queries)
    unknown_d = sorted({d for judged in self.qrels.values() for d in judged
                        if d not in self.corpus})
    if unknown_q or unknown_d:
      raise DataError(source, None, f"the qrels judge {len(unknown_q)} unknown query ids"
                                    f" (e.g. {unknown_q[:3]}) and {len(unknown_d)} unknown"
                                    f" document ids (e.g. {unknown_d[:3]}).")
    if not self.qrels:
      raise DataError(source, None, "no query has a judged document.")
    return self
