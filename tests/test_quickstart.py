"""The quickstart set (the interpreter's standard library) and its SentencePiece vocabulary.

Properties only: the exact counts change between Python releases.
"""

import ast
import collections
import logging
import pathlib
import sysconfig

import pytest
import sentencepiece

from samtone_jax.tasks import quickstart

MODEL_PATH = (pathlib.Path(__file__).resolve().parents[1] / "tasks" / "vocab"
              / "quickstart_spm.model")
VOCAB_SIZE = 2000
HANDMADE_TEXTS = (
    "@property\ndef f(self):\n\tx = 'caf\u00e9 \u20ac \U0001F600'  \n\n\treturn x\r\n",
    "class A:\n    def g(self, *args):\n        return [a  for a in args]  # two spaces\n",
)


@pytest.fixture(scope="module")
def pairs():
  return quickstart.build_pairs()


@pytest.fixture(scope="module")
def sp():
  return sentencepiece.SentencePieceProcessor(model_file=str(MODEL_PATH))


def _texts(pairs, split):
  return [text for pair in pairs[split] for text in (pair["query"], pair["passage"])]


def _docstrings_by_function(module):
  """{qualified name: [docstrings]} of the module's functions and methods, read afresh."""
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  path = root.joinpath(*module.split("."))
  path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
  found = collections.defaultdict(list)

  def visit(body, prefix):
    for node in body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        found[prefix + node.name].append(ast.get_docstring(node, clean=False))
      elif isinstance(node, ast.ClassDef):
        visit(node.body, f"{prefix}{node.name}.")

  visit(ast.parse(path.read_bytes()).body, "")
  return found


def test_size_and_fields(pairs):
  assert set(pairs) == {"train", "validation", "test"}
  assert 3000 <= sum(len(split) for split in pairs.values()) <= 12000
  assert len(pairs["train"]) > len(pairs["validation"]) > 0 and len(pairs["test"]) > 0
  for split in pairs.values():
    for pair in split:
      assert set(pair) == {"query", "passage", "module", "function"}
      assert all(isinstance(v, str) and v.strip() for v in pair.values()), pair


def test_no_split_shares_a_module(pairs):
  modules = {name: {pair["module"] for pair in split} for name, split in pairs.items()}
  assert not modules["train"] & modules["validation"]
  assert not modules["train"] & modules["test"]
  assert not modules["validation"] & modules["test"]


def test_passages_are_code_without_their_docstring(pairs):
  for split in pairs.values():
    docstrings = {}
    for pair in split:
      if pair["module"] not in docstrings:
        docstrings[pair["module"]] = _docstrings_by_function(pair["module"])
      originals = docstrings[pair["module"]][pair["function"]]
      assert originals, pair["function"]
      assert not any(doc and doc in pair["passage"] for doc in originals), pair["function"]
      assert pair["query"] not in pair["passage"]
      tree = ast.parse(pair["passage"])
      assert len(tree.body) == 1 and ast.get_docstring(tree.body[0]) is None, pair["passage"]


def test_deterministic(pairs):
  quickstart._all_pairs.cache_clear()
  assert quickstart.build_pairs() == pairs


def test_keeps_duplicate_queries(pairs):
  counts = collections.Counter(pair["query"] for split in pairs.values() for pair in split)
  assert counts.most_common(1)[0][1] > 1


def test_eval_set_is_consistent(pairs):
  test = quickstart.eval_set("test")
  assert len(test.corpus) == len(pairs["test"])  # one unique id a passage
  assert set(test.queries.values()) == {pair["query"] for pair in pairs["test"]}
  assert set(test.corpus.values()) == {pair["passage"] for pair in pairs["test"]}
  for query_id, judged in test.qrels.items():
    assert query_id in test.queries and judged
    assert all(doc_id in test.corpus for doc_id in judged)
  assert sum(len(judged) for judged in test.qrels.values()) == len(pairs["test"])


def test_eval_set_rejects_unknown_split():
  with pytest.raises(ValueError, match="split"):
    quickstart.eval_set("dev")


def test_unreadable_files_are_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
  (tmp_path / "good.py").write_text(
      'def f(x):\n  """Return x plus one."""\n  y = x + 1\n  return y\n')
  (tmp_path / "broken.py").write_text("def f(:\n")
  (tmp_path / "latin.py").write_bytes(b"s = '\xe9'\n")
  (tmp_path / "deep.py").write_text("x = " + "-" * 100_000 + "1\n")  # the parser overflows
  (tmp_path / "long.py").write_text("x = 1" + " + 1" * 100_000 + "\n")  # ast's recursion
  (tmp_path / "test").mkdir()
  (tmp_path / "test" / "test_skipped.py").write_text((tmp_path / "good.py").read_text())
  monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
  quickstart._all_pairs.cache_clear()
  try:
    with caplog.at_level(logging.WARNING):
      pairs = quickstart.build_pairs()
  finally:
    quickstart._all_pairs.cache_clear()
  assert [pair for split in pairs.values() for pair in split] == [{
      "query": "Return x plus one.", "passage": "def f(x):\n  y = x + 1\n  return y",
      "module": "good", "function": "f"}]
  assert "skipped 4 standard library files" in caplog.text


def test_vocabulary_has_t5_special_ids(sp):
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert sp.vocab_size() == VOCAB_SIZE


def test_vocabulary_round_trips_exactly(pairs, sp):
  """Indentation, runs of spaces, tabs, newlines and unseen characters all come back."""
  texts = _texts(pairs, "test") + list(HANDMADE_TEXTS)
  assert [sp.decode(sp.encode(text)) for text in texts] == texts


def test_vocabulary_has_no_unknown_pieces_on_the_test_split(pairs, sp):
  ids = [i for text in _texts(pairs, "test") for i in sp.encode(text)]
  assert ids.count(sp.unk_id()) == 0
  assert sum(sp.is_byte(i) for i in ids) / len(ids) < 0.01  # rare characters only


def test_seqio_loads_the_vocabulary(pairs, sp):
  seqio = pytest.importorskip("seqio")
  vocab = seqio.SentencePieceVocabulary(str(MODEL_PATH))
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.vocab_size == VOCAB_SIZE
  texts = [pairs["test"][0]["passage"], pairs["test"][0]["query"], *HANDMADE_TEXTS]
  for text in texts:
    assert vocab.encode(text) == sp.encode(text)
    assert vocab.encode_tf(text).numpy().tolist() == sp.encode(text)
    assert vocab.decode(vocab.encode(text)) == text


def test_no_pair_is_in_two_splits():
  quickstart._all_pairs.cache_clear()  # pylint: disable=protected-access
  seen = {}
  for split, pairs in quickstart.build_pairs().items():
    for pair in pairs:
      key = (pair["query"], pair["passage"])
      assert seen.setdefault(key, split) == split, (key[0], seen[key], split)


def test_the_sentences_variant_repeats_each_passage(pairs):
  """Section 3.4's set: each passage comes with several of its docstring's sentences, the
  first of them the quickstart's own summary, and few passages are unique."""
  variant = quickstart.build_sentence_pairs()
  summaries = {(p["passage"], p["query"]) for split in pairs.values() for p in split}
  for split, found in variant.items():
    by_passage = collections.defaultdict(list)
    for pair in found:
      by_passage[pair["passage"]].append(pair["query"])
      assert len(pair["query"].split()) >= quickstart.MIN_QUERY_WORDS
      assert pair["query"] not in " ".join(pair["passage"].split())
      assert ">>>" not in pair["query"]
    assert min(len(queries) for queries in by_passage.values()) >= quickstart.MIN_SENTENCES
    assert all((passage, queries[0]) in summaries for passage, queries in by_passage.items())
    assert len(by_passage) / len(found) < 0.35, split


def test_sentences_split_docstrings_by_paragraph_and_skip_doctests():
  docstring = """Return the sum.  It adds   two numbers.

  >>> add(1, 2)
  3

  Raises TypeError for strings! Or not?"""
  assert quickstart._sentences(docstring) == [  # pylint: disable=protected-access
      "Return the sum.", "It adds two numbers.", "Raises TypeError for strings!", "Or not?"]


def test_the_sentences_evaluation_set_ranks_the_variants_functions():
  """Its corpus is the test functions of the variant, each query relevant to the functions
  whose docstring holds it."""
  test = quickstart.eval_set("test", sentences=True)
  pairs = quickstart.build_sentence_pairs()["test"]
  assert set(test.corpus.values()) == {p["passage"] for p in pairs}
  relevant = collections.defaultdict(set)
  for pair in pairs:
    relevant[pair["query"]].add(pair["passage"])
  assert {test.queries[q]: {test.corpus[d] for d in docs} for q, docs in test.qrels.items()
          } == relevant
