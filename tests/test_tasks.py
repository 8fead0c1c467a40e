"""The registered SeqIO tasks and evaluation sets, end to end from files in official formats."""

import pathlib

import pytest
import seqio
import tensorflow_datasets as tfds

from samtone_jax import data_files, eval_sets, feature_converter, inputs
from samtone_jax.tasks import beir, multireqa, pairs, quickstart, vocabularies
from tests import format_files

VOCAB = vocabularies.quickstart_vocabulary()  # T5's special ids; exact round trips
LENGTHS = {"queries": 64, "passages": 512}


@pytest.fixture
def tfds_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(data_files.DATA_DIR_VARIABLE, str(tmp_path / "downloads"))
  seqio.set_tfds_data_dir_override(str(tmp_path / "tfds"))
  yield str(tmp_path / "tfds")
  seqio.set_tfds_data_dir_override(None)


def _decode(tokens):
  return VOCAB.decode([int(t) for t in tokens if t not in (0, 1)])


def _examples(task, split="train", num_negatives=0, lengths=LENGTHS):
  ds = inputs.get_dataset(task, split, lengths, 1, shuffle=False, num_epochs=1,
                          num_negatives=num_negatives)
  return [{k: v[0] for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def _check_ids(examples, texts_of):
  """Equal ids exactly for equal texts."""
  for feature, key in (("query_ids", "queries"), ("passage_ids", "passages")):
    by_id = {}
    for ex in examples:
      by_id.setdefault(int(ex[feature]), set()).add(texts_of(ex)[key])
    assert all(len(texts) == 1 for texts in by_id.values())
    assert len(by_id) == len({texts_of(ex)[key] for ex in examples})


def test_stdlib_code_search(tfds_dir):
  want = quickstart.build_pairs()["test"]
  examples = _examples("stdlib_code_search", "test", lengths={"queries": 512, "passages": 4096})
  texts = lambda ex: {"queries": _decode(ex["queries"]), "passages": _decode(ex["passages"])}
  got = sorted((texts(ex)["queries"], texts(ex)["passages"]) for ex in examples)
  assert got == sorted((p["query"], p["passage"]) for p in want)
  _check_ids(examples, texts)
  assert len({int(ex["query_ids"]) for ex in examples}) < len(examples)  # repeated queries


def test_msmarco_passage_triples(tfds_dir, tmp_path):
  folder = tmp_path / "downloads" / "msmarco"
  folder.mkdir(parents=True)
  for name, content in format_files.MSMARCO_FILES.items():
    format_files.write(folder / name, content)
  pairs.register_pairs_task("msmarco_passage_triples", "msmarco_passage/triples:1.0.0", VOCAB,
                            negatives=True)
  listing = lambda: sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
  before = listing()
  examples = _examples("msmarco_passage_triples", num_negatives=1)
  assert listing() == before  # nothing is written into the user's data folder
  got = sorted((_decode(ex["queries"]), _decode(ex["passages"]),
                _decode(ex["negative_passages"][0])) for ex in examples)
  assert got == [("what colour is the sky", "The sky is blue.", "Grass is green.")]


def test_multireqa_subset(tfds_dir, tmp_path):
  root = tmp_path / "downloads"
  for split in ("train", "dev"):
    mrqa_path, candidates_path = multireqa.paths(root, "SQuAD", split)
    for path, records in ((mrqa_path, format_files.MRQA_RECORDS),
                          (candidates_path, format_files.CANDIDATES)):
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
      format_files.write_json_lines(path, records)
  want, _, _ = multireqa.build(*multireqa.paths(root, "SQuAD", "dev"))
  pairs.register_pairs_task("multireqa_squad", "multireqa/squad:1.0.0", VOCAB)
  for split in ("train", "validation"):
    examples = _examples("multireqa_squad", split)
    got = sorted((_decode(ex["queries"]), _decode(ex["passages"])) for ex in examples)
    assert got == sorted((p["query"], p["passage"]) for p in want)


def test_tfds_beir_msmarco_variant():
  """The task over TFDS's own beir/msmarco builder, fed by tfds.testing.mock_data (whose
  builder has no split sizes, so the task is read without seqio's in-memory cache)."""
  task = pairs.register_pairs_task("beir_msmarco_tfds", "beir/msmarco:1.0.0", VOCAB)
  with tfds.testing.mock_data(num_examples=6):
    ds = task.get_dataset(LENGTHS, "train", shuffle=False, num_epochs=1,
                          try_in_mem_cache=False)
    ds = feature_converter.DualEncoderFeatureConverter()(ds, LENGTHS)
    examples = list(ds.as_numpy_iterator())
  assert len(examples) == 6
  for ex in examples:
    assert ex["queries"].shape == (64,) and 1 in ex["queries"] and 1 in ex["passages"]


def test_mixture_of_multireqa_training_sets():
  mixture = seqio.get_mixture_or_task("multireqa_all")
  assert sorted(t.name for t in mixture.tasks) == sorted(
      f"multireqa_{s.lower()}" for s in multireqa.SUBSETS["train_eval"])


def test_real_evaluation_sets(shared_data, monkeypatch):
  """The sets of ../shared/data by their registered names: BEIR NFCorpus (from its zip),
  MultiReQA SQuAD and BioASQ (from MRQA + MultiReQA files)."""
  monkeypatch.setenv(data_files.DATA_DIR_VARIABLE, str(shared_data))
  nfcorpus = eval_sets.get("beir_nfcorpus")
  assert (len(nfcorpus.corpus), len(nfcorpus.queries)) == (3633, 323)
  squad = eval_sets.get("multireqa_squad")
  assert (len(squad.queries), len(squad.corpus)) == (10449, 10642)
  bioasq = eval_sets.get("multireqa_bioasq")
  assert (len(bioasq.queries), len(bioasq.corpus)) == (222, 14158)
  assert beir.folder("nfcorpus") == shared_data / "beir" / "nfcorpus.zip" / "nfcorpus"


def test_unknown_evaluation_set_lists_the_known_ones():
  with pytest.raises(KeyError, match="beir_nfcorpus"):
    eval_sets.get("beir_nfcorpuss")


def test_t5_vocabulary_path_is_read_at_first_use_from_gin_or_the_environment(monkeypatch):
  import gin  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(vocabularies.T5_VOCABULARY_VARIABLE, "/nowhere/sentencepiece.model")
  vocab = vocabularies.t5_vocabulary()  # as the tasks hold it, made before gin is parsed
  gin.parse_config(f"vocabularies.t5_vocabulary_path.path = '{vocabularies.QUICKSTART_PATH}'")
  try:
    assert vocab.decode(vocab.encode("def f(x):\n  return x")) == "def f(x):\n  return x"
    assert vocab.sentencepiece_model_file == vocabularies.QUICKSTART_PATH
  finally:
    gin.clear_config()
  assert vocabularies.t5_vocabulary_path() == "/nowhere/sentencepiece.model"
