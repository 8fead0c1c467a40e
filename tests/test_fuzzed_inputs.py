"""Fuzzed data files: every reader of tasks/ and of beir_format.py, fed random mutations of
valid files in the published formats (truncation, bad bytes, wrong column counts, JSON type
changes, huge lines, corrupt gzip and zip archives), returns its documented result or raises
the documented DataError naming the file (the quickstart's Python reader: the errors that
skip a file); never another exception, a hang (hypothesis's deadline), or a partially
written prepared dataset.

The valid files are the reader tests' fixtures (tests/format_files.py).
"""

import datetime
import gzip
import io
import json
import pathlib
import tempfile
import zipfile

import hypothesis
from hypothesis import strategies as st
import pytest
import tensorflow_datasets as tfds

from samtone_jax import beir_format
from samtone_jax.data_files import DataError
from samtone_jax.tasks import msmarco, multireqa, quickstart
from tests import format_files

FUZZ = hypothesis.settings(max_examples=300, deadline=datetime.timedelta(seconds=20),
                           suppress_health_check=[hypothesis.HealthCheck.too_slow,
                                                  hypothesis.HealthCheck.data_too_large])

# Values that a JSON field may be changed to, one of each JSON type (and extremes).
JSON_VALUES = st.sampled_from([None, True, 0, -1, 2**70, 1.5, 1e308, "", "x", [], [0, 1],
                               {}, {"_id": 1}])
# Bytes a mutation writes: separators, quotes, brackets, NUL, bytes that are not UTF-8.
BYTES = st.one_of(st.sampled_from([b"\t", b"\n", b"\r\n", b" ", b'"', b"{", b"[", b"\x00",
                                   b"\xff", b"\xc3", b"\xed\xa0\x80"]),
                  st.binary(min_size=1, max_size=8))
# A huge line (up to 2 MiB): plain text, tabs, a long JSON string or deeply nested JSON.
HUGE_LINES = st.builds(lambda piece, n: piece * n,
                       st.sampled_from([b"a", b"\t", b"[", b'{"a":', b"\xe2\x98\x95"]),
                       st.integers(1, 2**21))


def _json_paths(value, path=()):
  """Every path (tuple of keys and indices) into a parsed JSON value."""
  yield path
  if isinstance(value, dict):
    items = value.items()
  elif isinstance(value, list):
    items = enumerate(value)
  else:
    items = ()
  for key, inner in items:
    yield from _json_paths(inner, path + (key,))


def _replace(value, path, new):
  if not path:
    return new
  value[path[0]] = _replace(value[path[0]], path[1:], new)
  return value


@st.composite
def mutated(draw, content: bytes) -> bytes:
  """`content` after one random mutation."""
  lines = content.split(b"\n")
  kind = draw(st.sampled_from(["truncate", "bad_bytes", "insert", "columns", "json_type",
                               "huge_line", "drop_line"]))
  if kind == "truncate":
    return content[:draw(st.integers(0, max(len(content) - 1, 0)))]
  if kind in ("bad_bytes", "insert"):
    at = draw(st.integers(0, len(content)))
    piece = draw(BYTES)
    return content[:at] + piece + content[at + (len(piece) if kind == "bad_bytes" else 0):]
  i = draw(st.integers(0, len(lines) - 1))
  if kind == "columns":  # one tab more or less on a line
    line = lines[i]
    lines[i] = line.replace(b"\t", b"", 1) if b"\t" in line and draw(st.booleans()) \
        else line + b"\textra"
  elif kind == "json_type":
    try:
      record = json.loads(lines[i])
    except ValueError:
      return content  # not a JSON line: the file stays valid
    path = draw(st.sampled_from(list(_json_paths(record))))
    lines[i] = json.dumps(_replace(record, path, draw(JSON_VALUES))).encode()
  elif kind == "huge_line":
    lines.insert(i, draw(HUGE_LINES))
  else:
    del lines[i]
  return b"\n".join(lines)


def _encoded(content) -> bytes:
  return content if isinstance(content, bytes) else content.encode("utf-8")


@st.composite
def mutated_files(draw, files: dict) -> dict[str, bytes]:
  """A copy of `files` ({name: text or bytes}) with one file mutated; a `.gz` file is
  mutated either before compression or as compressed bytes."""
  files = {name: _encoded(content) for name, content in files.items()}
  name = draw(st.sampled_from(sorted(files)))
  if name.endswith(".gz"):
    if draw(st.booleans()):
      files[name] = draw(mutated(files[name]))
    else:
      files[name] = draw(mutated(gzip.compress(gzip.decompress(files[name]), mtime=0)))
  else:
    files[name] = draw(mutated(files[name]))
  return files


def _write(folder: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
  for name, content in files.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
  return folder


def _documented(read, folder: pathlib.Path) -> None:
  """Runs `read(folder)`: it returns, or raises a DataError naming a file of `folder`."""
  try:
    read(folder)
  except DataError as e:
    assert e.path.startswith(str(folder)), e
    assert str(e).startswith(e.path), e


def _msmarco(folder):
  for negatives in (None, "triples", "qidpidtriples"):
    list(msmarco.iter_training_examples(folder, negatives))
  msmarco.eval_set(folder, "dev")
  msmarco.read_qrels(folder / "qrels.train.tsv")


def _beir(folder):
  beir_format.eval_set(folder, "test")
  list(beir_format.iter_training_examples(folder, "train"))


def _multireqa(folder):
  multireqa.build(folder / "SQuAD.jsonl.gz", folder / "candidates.json.gz")


def _gz_lines(records) -> bytes:
  return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0)


MULTIREQA_FILES = {"SQuAD.jsonl.gz": _gz_lines(format_files.MRQA_RECORDS),
                   "candidates.json.gz": _gz_lines(format_files.CANDIDATES)}


@pytest.mark.parametrize("files, read", [
    (format_files.MSMARCO_FILES, _msmarco),
    (format_files.BEIR_FILES, _beir),
    (MULTIREQA_FILES, _multireqa),
], ids=["msmarco", "beir", "multireqa"])
def test_mutated_files_give_data_errors(files, read):
  with tempfile.TemporaryDirectory() as valid:  # the fixtures themselves read
    read(_write(pathlib.Path(valid), {k: _encoded(v) for k, v in files.items()}))

  @FUZZ
  @hypothesis.given(mutated_files(files))
  def check(mutated_set):
    with tempfile.TemporaryDirectory() as folder:
      _documented(read, _write(pathlib.Path(folder), mutated_set))

  check()


def _zipped(files: dict) -> bytes:
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for name, content in files.items():
      zf.writestr(f"myset/{name}", _encoded(content))
  return out.getvalue()


@FUZZ
@hypothesis.given(st.one_of(
    st.builds(_zipped, mutated_files(format_files.BEIR_FILES)),  # a mutated member
    mutated(_zipped(format_files.BEIR_FILES))))  # a damaged archive
def test_mutated_zip_gives_data_errors(archive):
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "myset.zip"
    path.write_bytes(archive)
    _documented(lambda _: _beir(path / "myset"), pathlib.Path(folder))


QUICKSTART_SOURCE = b'''import os


class Reader:
  """Reads things."""

  def read(self, path, size=-1):
    """Return the first bytes of the file at path.

    More words.
    """
    with open(path, "rb") as f:
      return f.read(size)


def join(*parts):
  """Join the parts of a path with the separator."""
  if not parts:
    return ""
  return os.sep.join(parts)
'''


@FUZZ
@hypothesis.given(mutated(QUICKSTART_SOURCE))
def test_mutated_python_files_give_the_documented_errors(source):
  """The quickstart reads the standard library's files; one that does not read or parse
  raises SyntaxError, UnicodeDecodeError or ValueError (and is skipped, counted)."""
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "module.py"
    path.write_bytes(source)
    try:
      for pair in quickstart._module_pairs(path, "module"):  # pylint: disable=protected-access
        assert pair["query"] and pair["passage"]
    except (SyntaxError, UnicodeDecodeError, ValueError):
      pass


@hypothesis.settings(FUZZ, max_examples=20)
@hypothesis.given(mutated_files({k: format_files.MSMARCO_FILES[k] for k in (
    "collection.tsv", "queries.train.tsv", "qrels.train.tsv")}))
def test_a_failed_build_writes_no_dataset(files):
  """Building the TFDS pairs (prepare_data) from a bad folder raises the DataError and
  leaves no dataset behind, complete-looking or partial; a good one builds whole."""
  with tempfile.TemporaryDirectory() as manual, tempfile.TemporaryDirectory() as data_dir:
    builder = msmarco.MsmarcoPassage(config="qrels", data_dir=data_dir)
    config = tfds.download.DownloadConfig(manual_dir=str(_write(pathlib.Path(manual), files)))
    try:
      builder.download_and_prepare(download_config=config)
    except DataError:
      assert not builder.is_prepared()
      written = [p for p in pathlib.Path(data_dir).rglob("*")
                 if p.is_file() and ".config" not in p.parts]  # TFDS's note of the config
      assert not written, written
    else:
      assert builder.is_prepared()
      assert len(builder.as_dataset(split="train")) == builder.info.splits["train"].num_examples
