"""The entry points' shared start: TensorFlow kept to the host, quietly, and every source
registered; a required gin macro that no file sets stops every command at start-up, naming
the macro and the gin files, before anything is written; a run's own config.gin gives
evaluate its EVAL_TASKS."""

import json
import os
import pathlib
import re
import subprocess
import sys

import gin
import pytest

import samtone_jax.tasks  # pylint: disable=unused-import
from samtone_jax import analysis, encode, evaluate, export, launch, mine, train

LENGTHS = "{'queries': 16, 'passages': 32}"
# What a training run's config.gin sets, as `name = value` lines.
RUN_MACROS = {"MIXTURE_OR_TASK_NAME": "'stdlib_code_search'", "TASK_FEATURE_LENGTHS": LENGTHS,
              "EVAL_TASKS": "['stdlib_code_search_test']", "TRAIN_STEPS": "4",
              "BATCH_SIZE": "8", "LEARNING_RATE": "0.01", "TEMPERATURE": "0.05",
              "SAME_TOWER": "'query'", "BIDIRECTIONAL": "False", "PAIR_ALPHA": "0.0",
              "NUM_NEGATIVES": "0", "MASK_DUPLICATES": "False",
              "INITIAL_CHECKPOINT_PATH": "None"}


@pytest.fixture(autouse=True)
def _fresh_gin(monkeypatch):
  """An empty gin configuration, and XLA_FLAGS as it was (the entry points add to it)."""
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  gin.clear_config()
  yield
  gin.clear_config()


ROOT = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("train", "evaluate", "encode", "mine", "analysis", "export", "prepare_data")


def test_setup_host_registers_every_source_and_hides_the_gpus_from_tensorflow():
  done = subprocess.run(
      [sys.executable, "-c",
       "from samtone_jax import eval_sets, launch\n"
       "assert not eval_sets.names(), eval_sets.names()\n"
       "launch.setup_host()\n"
       "assert {'stdlib_code_search_test', 'multireqa_squad', 'beir_nfcorpus'}"
       " <= set(eval_sets.names()), eval_sets.names()\n"
       "import tensorflow as tf\n"
       "assert not tf.config.get_visible_devices('GPU')"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_entry_point_starts_quietly(module):
  """`python -m samtone_jax.<module>` sets TensorFlow up before its imports load it: nothing
  about CUDA from TensorFlow's import and GPU probing on a machine without one."""
  done = subprocess.run([sys.executable, "-m", f"samtone_jax.{module}", "--help"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "usage:" in done.stdout
  noisy = [line for line in (done.stdout + done.stderr).splitlines()
           if re.search(r"cuda|cuInit", line, re.IGNORECASE)]
  assert not noisy, noisy


def test_no_entry_point_starts_jax_before_its_main():
  """Importing an entry point, and setting up the host, runs no JAX computation: a run on
  several processes calls jax.distributed.initialize in `main`, which must come before
  anything starts the XLA backend (bm25s, for one, runs jax.lax.top_k when imported)."""
  modules = ", ".join(ENTRY_POINTS)
  done = subprocess.run(
      [sys.executable, "-c",
       "from samtone_jax import launch\n"
       "launch.setup_host()\n"
       f"from samtone_jax import {modules}\n"
       "from jax._src import xla_bridge\n"
       "assert not xla_bridge.backends_are_initialized()"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]


def _write_run(path, model=True, **macros):
  """A training run's folder as the commands read it: config.gin (the quickstart's model,
  unless `model` is False, and RUN_MACROS updated by `macros`) and a checkpoints/1 folder.

  Returns:
    The run's path.
  """
  lines = ["include 'models/t5_1_1_quickstart.gin'"] if model else []
  lines += [f"{name} = {value}" for name, value in {**RUN_MACROS, **macros}.items()]
  (path / "checkpoints" / "1").mkdir(parents=True)
  (path / "config.gin").write_text("\n".join(lines) + "\n")
  return path


def _write_beir(path):
  """A BEIR folder of 4 documents and 2 queries; returns its path."""
  path.mkdir(parents=True)
  docs = ["def add(a, b): return a + b", "def read(path): return open(path).read()",
          "class Stack: pass", "import os"]
  (path / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs)))
  (path / "queries.jsonl").write_text(
      json.dumps({"_id": "q0", "text": "add two numbers"}) + "\n"
      + json.dumps({"_id": "q1", "text": "read a file"}) + "\n")
  (path / "qrels").mkdir()
  (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
  return path


def _configurable_cases(tmp_path):
  """(main, gin files, bindings, the missing macro) of each gin-configured entry point;
  every binding that names a folder or file to write puts it under tmp_path / "out"."""
  run = _write_run(tmp_path / "run")
  config, out = str(run / "config.gin"), tmp_path / "out"
  return {
      "evaluate": (evaluate.main, [config, "runs/eval.gin"],
                   [f"EVAL_OUTPUT_DIR = '{out}'"], "CHECKPOINT_PATH"),
      "evaluate_without_a_run": (
          evaluate.main, ["models/t5_1_1_quickstart.gin", "runs/eval.gin"],
          ["MIXTURE_OR_TASK_NAME = 'stdlib_code_search'", f"TASK_FEATURE_LENGTHS = {LENGTHS}",
           f"CHECKPOINT_PATH = '{run}'", f"EVAL_OUTPUT_DIR = '{out}'"], "EVAL_TASKS"),
      "encode": (encode.main, [config, "runs/encode.gin"],
                 [f"CHECKPOINT_PATH = '{run}'", f"ENCODE_OUTPUT_DIR = '{out}'"],
                 "ENCODE_CORPUS"),
      "mine": (mine.main, [config, "runs/mine.gin"],
               [f"CHECKPOINT_PATH = '{run}'", f"MINE_OUTPUT_FILE = '{out}/mined.jsonl'"],
               "MINE_INPUT_FILES"),
      "mine_bm25": (mine.main, ["runs/mine_bm25.gin"],
                    [f"MINE_OUTPUT_FILE = '{out}/mined.jsonl'"], "MINE_INPUT_FILES"),
      "train": (train.main, ["experiments/quickstart.gin"], [], "MODEL_DIR"),
      "train_own_data": (train.main, ["experiments/own_data.gin"], [f"MODEL_DIR = '{out}'"],
                         "TRAIN_FILES"),
  }


@pytest.mark.parametrize("case", ["evaluate", "evaluate_without_a_run", "encode", "mine",
                                  "mine_bm25", "train", "train_own_data"])
def test_a_missing_macro_stops_a_gin_command_naming_it(case, tmp_path):
  main, files, bindings, missing = _configurable_cases(tmp_path)[case]
  argv = [*(f"--gin_file={f}" for f in files), *(f"--gin.{b}" for b in bindings)]
  with pytest.raises(ValueError, match=rf"gin macro {missing} is not set") as raised:
    main(argv)
  message = str(raised.value)
  assert all(f in message for f in files), message
  assert [name for name in ("CHECKPOINT_PATH", "EVAL_TASKS", "ENCODE_CORPUS",
                            "MINE_INPUT_FILES", "MINE_OUTPUT_FILE", "MODEL_DIR", "TRAIN_FILES")
          if re.search(rf"\b{name}\b", message)] == [missing], message
  assert not (tmp_path / "out").exists()


def test_a_run_without_model_stops_export_naming_it(tmp_path):
  run = _write_run(tmp_path / "run", model=False)
  with pytest.raises(ValueError, match=r"gin macro MODEL is not set") as raised:
    export.main([f"--checkpoint={run / 'checkpoints' / '1'}", f"--out={tmp_path / 'out'}"])
  assert str(run / "config.gin") in str(raised.value)
  assert not (tmp_path / "out").exists()


def test_an_override_left_required_stops_export_naming_it(tmp_path):
  run = _write_run(tmp_path / "run")
  (tmp_path / "card.gin").write_text("TEMPERATURE = %gin.REQUIRED\n")
  with pytest.raises(ValueError, match=r"gin macro TEMPERATURE is not set") as raised:
    export.main([f"--checkpoint={run}/checkpoints/1", f"--out={tmp_path / 'out'}",
                 f"--gin_file={tmp_path / 'card.gin'}"])
  assert str(tmp_path / "card.gin") in str(raised.value)
  assert not (tmp_path / "out").exists()


def test_a_run_without_lengths_stops_analysis_naming_them(tmp_path):
  run = _write_run(tmp_path / "run")
  (run / "config.gin").write_text(
      (run / "config.gin").read_text().replace(f"TASK_FEATURE_LENGTHS = {LENGTHS}\n", ""))
  beir = _write_beir(tmp_path / "beir")
  with pytest.raises(ValueError, match=r"gin macro TASK_FEATURE_LENGTHS is not set") as raised:
    analysis.main([f"--checkpoint={run}", f"--task=beir:{beir}", f"--out={tmp_path / 'out'}"])
  assert str(run / "config.gin") in str(raised.value)
  assert not (tmp_path / "out").exists()


def test_a_run_without_model_stops_analysis_naming_it(tmp_path):
  run = _write_run(tmp_path / "run", model=False)
  beir = _write_beir(tmp_path / "beir")
  with pytest.raises(ValueError, match=r"gin macro MODEL is not set"):
    analysis.main([f"--checkpoint={run}", f"--task=beir:{beir}", f"--out={tmp_path / 'out'}"])
  assert not (tmp_path / "out").exists()


def test_evaluate_scores_the_sets_that_the_run_names(tmp_path):
  """Without an EVAL_TASKS flag, evaluate scores the sets of the run's config.gin (here a
  BEIR folder, with a Hugging Face T5 folder of the quickstart's sizes as the checkpoint)."""
  from tests import hf_fixtures  # pylint: disable=g-import-not-at-top
  hf_fixtures.save_t5_encoder(tmp_path / "t5", vocab_size=2000, d_model=64, d_ff=128,
                              num_heads=4, d_kv=16, num_layers=2,
                              relative_attention_num_buckets=32,
                              relative_attention_max_distance=128)
  beir = _write_beir(tmp_path / "mine")
  run = _write_run(tmp_path / "run", EVAL_TASKS=f"['beir:{beir}']")
  evaluate.main([f"--gin_file={run / 'config.gin'}", "--gin_file=runs/eval.gin",
                 f"--gin.CHECKPOINT_PATH='{tmp_path / 't5'}'",
                 f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'out'}'"])
  written = json.loads((tmp_path / "out" / "metrics.json").read_text())
  [(row, metrics)] = written.items()  # one set, ranked for the folder's queries q0 and q1
  trec = (tmp_path / "out" / f"{row}.trec").read_text().splitlines()
  assert {line.split()[0] for line in trec} == {"q0", "q1"} and 0 < metrics["MRR"] <= 1


def test_evaluate_refuses_an_empty_eval_tasks(tmp_path):
  """A run trained without EVAL_TASKS (runs/train.gin's default, []) names no set: evaluate
  asks for one instead of writing an empty metrics.json."""
  run = _write_run(tmp_path / "run", EVAL_TASKS="[]")
  with pytest.raises(ValueError, match=r"EVAL_TASKS"):
    evaluate.main([f"--gin_file={run / 'config.gin'}", "--gin_file=runs/eval.gin",
                   f"--gin.CHECKPOINT_PATH='{run}'", f"--gin.EVAL_OUTPUT_DIR='{tmp_path}/out'"])
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("experiment, left", [
    ("quickstart", ["MODEL_DIR"]), ("own_data", ["MODEL_DIR", "TRAIN_FILES"]),
    ("paper/msmarco_sde_samtone", ["MODEL_DIR"]), ("paper/nq_ade_spl_pair", ["MODEL_DIR"])])
def test_a_shipped_experiment_leaves_only_its_documented_macros(experiment, left):
  """The check refuses no macro that an experiment sets: only those its header asks for."""
  launch.parse_gin([f"experiments/{experiment}.gin"])
  assert launch.missing_macros() == left


def _spm_model(path: pathlib.Path, texts: list[str]) -> str:
  """A small SentencePiece model of `texts` with T5's special ids, at `path`."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_prefix=str(path.with_suffix("")), vocab_size=60,
      model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
      minloglevel=2, hard_vocab_limit=False)
  return str(path)


def test_read_run_gives_the_vocabulary_file_each_run_names(tmp_path):
  """A run trained with its own SentencePiece file (gin-bound, as the own-data task reads
  T5's vocabulary) is read back with that file, run after run in one process; not with
  whatever file the task's vocabulary first loaded."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  text = "the quick brown fox jumps over the lazy dog"
  files = [_spm_model(tmp_path / "a.model", [text, "a cat sat on a mat"] * 20),
           _spm_model(tmp_path / "b.model", ["zebra xylophone quiz", text.upper()] * 20)]
  for i, vocabulary_file in enumerate(files):
    config = tmp_path / f"config_{i}.gin"
    config.write_text(
        "include 'models/t5_1_1_tiny.gin'\ninclude 'architectures/sde.gin'\n"
        "MIXTURE_OR_TASK_NAME = 'own_pairs'\n"
        f"vocabularies.t5_vocabulary_path.path = '{vocabulary_file}'\n")
    _, settings = launch.read_run([str(config)], ["MIXTURE_OR_TASK_NAME"])
    want = spm.SentencePieceProcessor(model_file=vocabulary_file).encode(text)
    assert list(settings["VOCABULARY"].encode(text)) == want
  assert (spm.SentencePieceProcessor(model_file=files[0]).encode(text)
          != spm.SentencePieceProcessor(model_file=files[1]).encode(text))


def test_the_t5_vocabulary_follows_the_configuration_in_use(tmp_path):
  """The tasks' T5 vocabulary reads the file that the gin configuration names when it is used,
  so that a second configuration in one process (tests, a study's worker) gets its own."""
  import seqio  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  text = "the quick brown fox jumps over the lazy dog"
  files = [_spm_model(tmp_path / "a.model", [text, "a cat sat on a mat"] * 20),
           _spm_model(tmp_path / "b.model", ["zebra xylophone quiz", text.upper()] * 20)]
  vocabulary = seqio.get_mixture_or_task("own_pairs").output_features["queries"].vocabulary
  for vocabulary_file in files:
    gin.clear_config()
    gin.parse_config(f"vocabularies.t5_vocabulary_path.path = '{vocabulary_file}'")
    want = spm.SentencePieceProcessor(model_file=vocabulary_file).encode(text)
    assert list(vocabulary.encode(text)) == want
