"""Export to sentence-transformers: the exported model, run by sentence-transformers on
PyTorch, embeds texts as our JAX model does; its tokenizer gives seqio's ids; reading the
folder back gives the exported parameters."""

import io
import json
import shutil

import jax
import numpy as np
import pytest
import seqio
import sentence_transformers
import sentencepiece as spm
import transformers

from samtone_jax import checkpoints, embedder, export, launch, pretrained, retrieval
from samtone_jax.tasks import quickstart, vocabularies
from tests.training import run_training

ARCHITECTURES = ("sde", "ade", "ade_spl")
# Code, indentation, runs of spaces, tabs and newlines, accents (composed or not), CJK, an
# emoji (byte fallback), a text longer than both sides' lengths, and an empty one.
TEXTS = ["def add(a, b):\n    return a + b\n", "Return the sum of two numbers.",
         "  leading,\ttabs and   runs of  spaces  ", "naïve café, nai\u0308ve, 漢字 😀 ﬁ",
         " ".join(f"word{i}" for i in range(40)), ""]


@pytest.fixture(scope="module")
def exported(tfds_dir, tmp_path_factory):  # pylint: disable=unused-argument
  """{architecture: (MODEL_DIR, exported folder)}: the tiny model, trained 2 steps each;
  only the ADE-SPL run ranks the held-out pool (for the model card)."""
  out = {}
  for architecture in ARCHITECTURES:
    root = tmp_path_factory.mktemp(architecture)
    pool = [] if architecture == "ade_spl" else ["EVAL_TASKS = []"]
    run_training(root / "run", "TRAIN_STEPS = 2", "EVAL_SPLIT = None",
                 f"ARCHITECTURE = '{architecture}'", *pool)
    export.main([f"--checkpoint={root / 'run'}", f"--out={root / 'exported'}"])
    out[architecture] = root / "run", root / "exported"
  return out


def _jax_model(run):
  """The run's model, parameters, lengths and vocabulary, as training left them."""
  model, settings = launch.read_run([str(run / "config.gin")],
                                    ["TASK_FEATURE_LENGTHS", "MIXTURE_OR_TASK_NAME"])
  lengths = settings["TASK_FEATURE_LENGTHS"]
  vocabulary = embedder.task_vocabulary(settings["MIXTURE_OR_TASK_NAME"])
  return model, checkpoints.load_params(model, str(run), lengths), lengths, vocabulary


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sentence_transformers_embeds_as_jax(exported, architecture):
  run, folder = exported[architecture]
  model, params, lengths, vocabulary = _jax_model(run)
  st = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
  embeddings = {}
  for task, encode, method, length in (
      ("query", st.encode_query, model.encode_queries, lengths["queries"]),
      ("document", st.encode_document, model.encode_passages, lengths["passages"])):
    ids = retrieval.tokenize(TEXTS, vocabulary, length)  # seqio's ids, cut, EOS, padding
    got_ids = st.preprocess(TEXTS, task=task)["input_ids"].numpy()
    np.testing.assert_array_equal(got_ids, ids[:, :got_ids.shape[1]])
    assert not ids[:, got_ids.shape[1]:].any()
    want = np.asarray(model.apply({"params": params}, ids, method=method))
    embeddings[task] = encode(TEXTS)
    np.testing.assert_allclose(embeddings[task], want, atol=1e-4, err_msg=task)
  if architecture != "sde":  # the routes' towers differ, so the test tells them apart
    assert np.abs(embeddings["query"] - embeddings["document"]).max() > 1e-2


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_export_then_import_is_the_identity(exported, architecture):
  run, folder = exported[architecture]
  model, params, _, _ = _jax_model(run)
  config, loaded_architecture, loaded = pretrained.load_dual_encoder(folder)
  assert loaded_architecture == architecture
  pretrained.check_compatible(config, model.config, str(folder))
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def _t5_like_vocabulary(tmp_path, texts):
  """A SentencePiece model with T5's settings (NFKC, extra whitespace removed, no byte
  fallback), seqio's 100 sentinels added as T5's vocabulary has them."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, model_type="unigram", vocab_size=300,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2)
  (tmp_path / "t5_like.model").write_bytes(model.getvalue())
  return seqio.SentencePieceVocabulary(str(tmp_path / "t5_like.model"), extra_ids=100)


@pytest.mark.parametrize("vocabulary", ["quickstart", "t5_like"])
def test_tokenizer_gives_sentencepiece_ids(tmp_path, vocabulary):
  """The saved tokenizer, as sentence-transformers loads it, on varied texts and the whole
  quickstart test split (code): seqio's ids, then EOS."""
  texts = TEXTS + ["<extra_id_0> is a sentinel", "ＡＢＣ ① ㎏ \u00a0x", "\r\n\t "]
  texts += [pair[key] for pair in quickstart.build_pairs()["test"] for key in ("query", "passage")]
  vocabulary = (vocabularies.quickstart_vocabulary() if vocabulary == "quickstart"
                else _t5_like_vocabulary(tmp_path, texts[-400:]))
  export.hf_tokenizer(vocabulary).save_pretrained(tmp_path / "tokenizer")
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
  got = tokenizer(texts)["input_ids"]
  for text, ids in zip(texts, got):
    assert ids == [*vocabulary.encode(text), vocabulary.eos_id], repr(text)


def test_model_card(exported):
  run, folder = exported["ade_spl"]
  card = (folder / "README.md").read_text()
  for fact in ("library_name: sentence-transformers", "ADE-SPL", "one projection shared by both",
               "SamToNe", "same-tower negatives on the query side", "temperature 0.05",
               "`stdlib_code_search`, 2 steps of global batch 16", "cut to 16 tokens for queries"
               " and 32 for documents", "encode_query"):
    assert fact in card, fact
  metrics = json.loads((run / "metrics.json").read_text())
  reported = [name for name in metrics if name.startswith(("retrieval/", "eval/"))]
  assert "retrieval/stdlib_code_search_test/MRR" in reported
  for name in reported:
    assert f"| {name} | {metrics[name]:.4f} |" in card


def test_a_step_folder_and_a_bad_path(exported, tmp_path):
  run, folder = exported["sde"]
  export.export(str(run / "checkpoints" / "2"), str(tmp_path / "step2"))
  _, _, from_step = pretrained.load_dual_encoder(tmp_path / "step2")
  _, _, from_run = pretrained.load_dual_encoder(folder)
  jax.tree.map(np.testing.assert_array_equal, from_step, from_run)
  with pytest.raises(FileNotFoundError, match="config.gin is missing"):
    export.export(str(tmp_path), str(tmp_path / "nothing"))


def test_router_folders_are_checked(exported, tmp_path):
  folder = shutil.copytree(exported["ade"][1], tmp_path / "ade")
  with pytest.raises(pretrained.CheckpointError, match="read it with load_dual_encoder"):
    pretrained.load_sentence_transformers(folder)
  config = folder / "router_config.json"
  config.write_text(config.read_text().replace('"document_2_Dense"\n', '"query_1_Pooling"\n'))
  with pytest.raises(pretrained.CheckpointError,
                     match=r"router_config.json: route 'document' should be Transformer, Pooling,"
                           r" Dense; it is \['Transformer', 'Pooling', 'Pooling'\]"):
    pretrained.load_dual_encoder(folder)
