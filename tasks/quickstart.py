"""The quickstart data set: code search over the running interpreter's standard library.

Every machine that runs this project has it, so the quickstart needs no download. The pairs
are built as in CodeSearchNet (Husain et al., 2019, https://arxiv.org/abs/1909.09436):

- query: the summary of a function's docstring (its first paragraph up to the end of the
  first sentence), whitespace runs joined to one space;
- passage: the function's source (decorators included) with the docstring removed, dedented.

The functions are the module-level functions and the methods (of classes at any nesting, not
functions nested in functions) of the standard library's `.py` files, read with `ast` (no
module is imported), in sorted path order, skipping `site-packages`, the test suites,
`idlelib`, `lib2to3` and `__pycache__`. A function is dropped when its summary has fewer than
`MIN_QUERY_WORDS` words, its passage fewer than `MIN_PASSAGE_LINES` non-blank lines or more
than `MAX_PASSAGE_CHARS` characters, when its docstring shares a line with other code, or when
the passage still contains the summary (a copied docstring would give the answer away).
Files that do not read or parse are skipped, with one warning that counts them.

Splits are drawn by module from a stable hash of its dotted name (about 80/10/10 modules to
train/validation/test), so no split shares a module. Queries repeat ("Return a string
representation ..."); the duplicates are kept, as in the real data sets.

The set depends on the Python release (`PYTHON_VERSION`); its size is about 6,000 pairs.

A variant with few unique passages, `stdlib_code_search_sentences` (the paper's Section 3.4
setting, where passages repeat within a batch): each function with at least
`MIN_SENTENCES` docstring sentences is paired with each of them (up to `MAX_SENTENCES`), so
the same passage comes with several queries. Its sentences are those of the docstring's
paragraphs without doctest lines (`>>>`), each passing the same filters as a summary.
"""

import ast
import collections
import functools
import hashlib
import logging
import os
import pathlib
import platform
import re
import sysconfig
import tokenize
from typing import Iterator, Optional

import tensorflow_datasets as tfds

from samtone_jax import data_files, eval_sets
from samtone_jax.tasks import pairs, vocabularies

PYTHON_VERSION = platform.python_version()
SPLITS = ("train", "validation", "test")
SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})
MIN_QUERY_WORDS = 3
MIN_PASSAGE_LINES = 2
MAX_PASSAGE_CHARS = 4000
MIN_SENTENCES = 3
MAX_SENTENCES = 8

_BLANK_LINE = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _source_files(root: pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields the `.py` files under `root` outside SKIP_DIRS, in sorted path order."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
    for name in sorted(filenames):
      if name.endswith(".py"):
        yield pathlib.Path(dirpath, name)


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  """The dotted module name of a file under `root`: "email/utils.py" -> "email.utils"."""
  parts = path.relative_to(root).with_suffix("").parts
  if parts[-1] == "__init__" and len(parts) > 1:
    parts = parts[:-1]
  return ".".join(parts)


def _functions(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
  """Yields (qualified name, node) of the functions of a module or class body, recursing
  into classes (methods, nested classes' methods) but not into functions."""
  for node in body:
    if isinstance(node, _FUNCTIONS):
      yield prefix + node.name, node
    elif isinstance(node, ast.ClassDef):
      yield from _functions(node.body, f"{prefix}{node.name}.")


def _summary(docstring: str) -> str:
  """The first sentence of a docstring's first paragraph, whitespace runs to one space."""
  paragraph = _BLANK_LINE.split(docstring.strip(), 1)[0]
  return " ".join(_SENTENCE_END.split(" ".join(paragraph.split()), 1)[0].split())


def _sentences(docstring: str) -> list[str]:
  """The sentences of a docstring's paragraphs, whitespace runs to one space, skipping
  paragraphs with doctest lines; the first is the summary (`_summary`)."""
  found = []
  for paragraph in _BLANK_LINE.split(docstring.strip()):
    if ">>>" not in paragraph:
      found.extend(" ".join(s.split()) for s in _SENTENCE_END.split(" ".join(paragraph.split())))
  return found


def _passage(lines: list[str], node: ast.AST) -> Optional[str]:
  """The dedented source of function `node` without its docstring, or None when the
  docstring shares a line with other code or is the function's only statement.

  Args:
    lines: the file's lines, with their line endings.
    node: a FunctionDef or AsyncFunctionDef whose body starts with a docstring.
  """
  doc = node.body[0]
  if len(node.body) < 2:
    return None
  first, last = doc.lineno - 1, doc.end_lineno - 1
  if lines[first][:doc.col_offset].strip() or lines[last][doc.end_col_offset:].strip():
    return None
  start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
  indent = lines[node.lineno - 1][:node.col_offset]
  kept = lines[start:first] + lines[last + 1:node.end_lineno]
  return "".join(_dedent(line, indent) for line in kept).rstrip()


def _dedent(line: str, indent: str) -> str:
  """`line` without the prefix `indent` (a whitespace-only line becomes its line ending).

  Unlike textwrap.dedent, lines that lack the prefix (the insides of a multi-line string at
  column 0) are kept as they are, so a method always dedents to code that parses.
  """
  if not line.strip():
    return line.lstrip(" \t\f")
  return line[len(indent):] if line.startswith(indent) else line


def _keep(query: str, passage: str) -> bool:
  """Whether a pair passes the filters: not trivial, not too long, not giving itself away."""
  return (len(query.split()) >= MIN_QUERY_WORDS
          and sum(1 for line in passage.splitlines() if line.strip()) >= MIN_PASSAGE_LINES
          and len(passage) <= MAX_PASSAGE_CHARS
          and query not in " ".join(passage.split()))


def _read(path: pathlib.Path) -> tuple[list[str], ast.Module]:
  """The lines and syntax tree of a Python file, decoded as its coding cookie says.

  Raises:
    SyntaxError: also for a file too deeply nested to parse, on which CPython's parser raises
      MemoryError ("Parser stack overflowed") or its syntax tree RecursionError.
  """
  with tokenize.open(path) as f:
    source = f.read()
  try:
    tree = ast.parse(source, filename=str(path))
  except (MemoryError, RecursionError) as e:
    raise SyntaxError(f"{path}: too deeply nested to parse ({type(e).__name__})") from None
  return source.splitlines(keepends=True), tree


def _module_pairs(path: pathlib.Path, module: str) -> Iterator[dict[str, str]]:
  """Yields the pairs of one file (see the module docstring for the filters).

  Raises:
    SyntaxError, UnicodeDecodeError, ValueError: for a file that does not read or parse.
  """
  lines, tree = _read(path)
  for name, node in _functions(tree.body):
    docstring = ast.get_docstring(node)
    if not docstring:
      continue
    query, passage = _summary(docstring), _passage(lines, node)
    if passage is not None and _keep(query, passage):
      sentences = [s for s in _sentences(docstring) if _keep(s, passage)]
      yield {"query": query, "passage": passage, "module": module, "function": name,
             "lineno": node.lineno, "sentences": sentences}


def split_of(module: str) -> str:
  """The split of a module: "train", "validation" or "test", from a stable hash of its
  dotted name (80/10/10 in expectation)."""
  bucket = int.from_bytes(hashlib.blake2b(module.encode(), digest_size=8).digest(), "big") % 10
  return SPLITS[0] if bucket < 8 else SPLITS[1] if bucket < 9 else SPLITS[2]


@functools.lru_cache(maxsize=None)
def _all_pairs() -> dict[str, list[dict]]:
  """The pairs of each split, with the function's line number ("lineno") kept for ids."""
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  pairs = {split: [] for split in SPLITS}
  unreadable = 0
  for path in _source_files(root):
    module = _module_name(path, root)
    try:
      found = list(_module_pairs(path, module))
    except (SyntaxError, UnicodeDecodeError, ValueError):
      unreadable += 1
      continue
    pairs[split_of(module)].extend(found)
  if unreadable:
    logging.warning("quickstart: skipped %d standard library files under %s that do not"
                    " read or parse as Python %s.", unreadable, root, PYTHON_VERSION)
  # The standard library copies some functions between modules (e.g. a pure-Python twin):
  # a pair already in an earlier split would leak into evaluation, so it is dropped.
  seen, leaked = set(), 0
  for split in SPLITS:
    kept = [p for p in pairs[split] if (p["query"], p["passage"]) not in seen]
    leaked += len(pairs[split]) - len(kept)
    seen.update((p["query"], p["passage"]) for p in kept)
    pairs[split] = kept
  if leaked:
    logging.info("quickstart: dropped %d pairs that repeat a pair of an earlier split.",
                 leaked)
  return pairs


def build_pairs() -> dict[str, list[dict]]:
  """The quickstart pairs.

  Returns:
    {"train" | "validation" | "test": [{"query", "passage", "module", "function"}]}, each
    a str; "function" is the qualified name within the module ("Class.method"). Fresh lists
    and dicts each call (the parsing is cached).
  """
  return {split: [{k: pair[k] for k in ("query", "passage", "module", "function")}
                  for pair in pairs] for split, pairs in _all_pairs().items()}


def _sentence_pairs(split: str) -> list[dict]:
  """The sentences variant's pairs of a split, with their function's "module", "function"
  and "lineno": each function with at least MIN_SENTENCES docstring sentences, paired with
  each of its first MAX_SENTENCES."""
  return [dict(pair, query=sentence) for pair in _all_pairs()[split]
          if len(pair["sentences"]) >= MIN_SENTENCES
          for sentence in pair["sentences"][:MAX_SENTENCES]]


def build_sentence_pairs() -> dict[str, list[dict]]:
  """The low-unique-passage variant.

  Returns:
    {"train" | "validation" | "test": [{"query", "passage"}]}, the pairs of one function
    next to each other (the training pipeline shuffles them).
  """
  return {split: [{"query": pair["query"], "passage": pair["passage"]}
                  for pair in _sentence_pairs(split)] for split in SPLITS}


def eval_set(split: str, sentences: bool = False) -> data_files.RetrievalSet:
  """A split as a retrieval evaluation set.

  Args:
    split: "train", "validation" or "test".
    sentences: the sentences variant's pairs instead of the summaries'.

  Returns:
    queries: "q<n>" -> query, one per distinct query text, numbered in order; corpus:
    "module:function:lineno" -> passage, one per function (a module and the line of a `def`
    name one function, so the ids are unique); qrels: each query is relevant (1) to every
    passage it was paired with.

  Raises:
    ValueError: for an unknown split.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  queries, corpus, query_ids = {}, {}, {}
  qrels = collections.defaultdict(dict)
  for pair in _sentence_pairs(split) if sentences else _all_pairs()[split]:
    query_id = query_ids.setdefault(pair["query"], f"q{len(query_ids)}")
    doc_id = f"{pair['module']}:{pair['function']}:{pair['lineno']}"
    queries[query_id] = pair["query"]
    corpus[doc_id] = pair["passage"]
    qrels[query_id][doc_id] = 1
  name = f"quickstart{'_sentences' if sentences else ''}/{split} (Python {PYTHON_VERSION})"
  return data_files.RetrievalSet(queries, corpus, dict(qrels), name=name).check()


# -- TFDS pairs and SeqIO task -------------------------------------------------------------

# One config per Python release, since the set depends on it: data built by another
# interpreter is never reused by mistake; "<config>_sentences" is the variant.
CONFIG = "py" + PYTHON_VERSION.replace(".", "_")
SENTENCES_CONFIG = CONFIG + "_sentences"


class StdlibCodeSearch(pairs.PairsBuilder):
  """The quickstart's code-search pairs from this interpreter's standard library."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      pairs.PairsConfig(name=CONFIG, description=f"built from Python {PYTHON_VERSION}"),
      pairs.PairsConfig(name=SENTENCES_CONFIG,
                        description=f"docstring sentences, built from Python {PYTHON_VERSION}")]
  SPLITS = SPLITS

  def iter_pairs(self, split, manual_dir):
    found = (build_sentence_pairs() if self.builder_config.name == SENTENCES_CONFIG
             else build_pairs())
    for pair in found[split]:
      yield {"query": pair["query"], "passage": pair["passage"]}


pairs.register_pairs_task("stdlib_code_search", f"stdlib_code_search/{CONFIG}:1.0.0",
                          vocabularies.quickstart_vocabulary())
pairs.register_pairs_task("stdlib_code_search_sentences",
                          f"stdlib_code_search/{SENTENCES_CONFIG}:1.0.0",
                          vocabularies.quickstart_vocabulary())
for _split in ("validation", "test"):
  eval_sets.register(f"stdlib_code_search_{_split}", lambda split=_split: eval_set(split))
  eval_sets.register(f"stdlib_code_search_sentences_{_split}",
                     lambda split=_split: eval_set(split, sentences=True))
