"""`evaluate` in process: one row a set, embeddings made again when what made them changed,
and one checkpoint step a command; `python -m samtone_jax.evaluate` on a trained run gives
the metrics that training reported."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import seqio

from samtone_jax import embedding_shards, evaluate, run_dir, train
from samtone_jax.tasks import vocabularies
from tests import processes
from tests.training import ROOT, run_training

WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "jam"]
CORPUS = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {WORDS[(7 * i) % 10]} {i}"
          for i in range(30)}


def _evaluate(tiny_run, eval_tasks, output_dir, **options):
  model, run, lengths = tiny_run
  return evaluate.evaluate(**{**dict(
      model=model, checkpoint_path=str(run), eval_tasks=eval_tasks, output_dir=str(output_dir),
      task_feature_lengths=lengths, vocabulary=seqio.ByteVocabulary(), k=10, batch_size=8),
      **options})


def test_two_folders_of_one_name_give_two_rows(tiny_run, beir_folder, tmp_path):
  a = beir_folder(tmp_path / "a" / "eval", CORPUS)
  b = beir_folder(tmp_path / "b" / "eval", {k: CORPUS[k] for k in list(CORPUS)[:12]})
  out = tmp_path / "out"
  results = _evaluate(tiny_run, [f"beir:{a}", f"beir:{b}"], out)
  alone = {folder: _evaluate(tiny_run, [f"beir:{folder}"], tmp_path / folder.parent.name)
           for folder in (a, b)}
  assert sorted(results) == ["beir_a_eval", "beir_b_eval"]
  assert results["beir_a_eval"] == alone[a]["beir_eval"]
  assert results["beir_b_eval"] == alone[b]["beir_eval"]
  assert results["beir_a_eval"] != results["beir_b_eval"]
  assert json.loads((out / "metrics.json").read_text()) == results
  for name, rows in (("beir_a_eval", 30), ("beir_b_eval", 12)):
    assert len((out / f"{name}.trec").read_text().splitlines()) == rows * 10
    assert json.loads((out / "embeddings" / name / "meta.json").read_text())["rows"] == rows


def _shards(directory):
  shards = embedding_shards.EmbeddingShards(directory)
  return shards[0:len(shards)]


def _meta(output_dir, name="beir_eval"):
  return json.loads((output_dir / "embeddings" / name / "meta.json").read_text())


@pytest.mark.parametrize("change", ["texts", "vocabulary", "model"])
def test_embeddings_of_other_texts_vocabulary_or_model_are_made_again(
    change, tiny_run, beir_folder, tmp_path):
  """Evaluated again after a text is corrected under its id, with another vocabulary, or with
  another model config (the same parameters): the metrics and embeddings are those of a
  fresh directory, not of the old shards."""
  model, run, lengths = tiny_run
  folder = beir_folder(tmp_path / "eval", CORPUS)
  out = tmp_path / "out"
  _evaluate(tiny_run, [f"beir:{folder}"], out)
  before = _shards(out / "embeddings" / "beir_eval")
  options = {}
  if change == "texts":
    corrected = dict(CORPUS, d3="grape grape jam 3")
    shutil.rmtree(folder)
    beir_folder(folder, corrected)
  elif change == "vocabulary":
    options["vocabulary"] = vocabularies.quickstart_vocabulary()
  else:
    options["model"] = dataclasses.replace(
        model, config=dataclasses.replace(model.config, mlp_activations=("relu", "linear")))
  again = _evaluate(tiny_run, [f"beir:{folder}"], out, **options)
  fresh = _evaluate(tiny_run, [f"beir:{folder}"], tmp_path / "fresh", **options)
  assert again == fresh
  np.testing.assert_array_equal(_shards(out / "embeddings" / "beir_eval"),
                                _shards(tmp_path / "fresh" / "embeddings" / "beir_eval"))
  assert not np.allclose(before, _shards(out / "embeddings" / "beir_eval"))
  assert _meta(out) == _meta(tmp_path / "fresh")


def test_the_checkpoint_is_looked_up_once(tiny_run, beir_folder, tmp_path, monkeypatch):
  """A checkpoint saved while `evaluate` runs (here: every lookup after the first finds step
  8) changes neither the parameters nor the step its embeddings are labelled with."""
  _, run, _ = tiny_run
  folder = beir_folder(tmp_path / "eval", CORPUS)
  steps = iter([4])
  monkeypatch.setattr(run_dir.RunDir, "latest_step", lambda self: next(steps, 8))
  results = _evaluate(tiny_run, [f"beir:{folder}"], tmp_path / "out")
  meta = _meta(tmp_path / "out")
  assert meta["step"] == 4 and meta["checkpoint"] == str(run / "checkpoints" / "4")
  monkeypatch.undo()
  at = {step: _evaluate(tiny_run, [f"beir:{folder}"], tmp_path / str(step),
                        checkpoint_path=str(run / "checkpoints" / str(step)))
        for step in (4, 8)}
  assert results == at[4] != at[8]


def test_evaluate_command_reproduces_the_training_evaluation(tfds_dir, tmp_path, monkeypatch):
  """`python -m samtone_jax.evaluate` on a run's config.gin and MODEL_DIR gives the metrics
  that the run reported, and writes metrics.json and a TREC run file. Both embed the corpus
  into shards (training does so above STREAMED_CORPUS documents)."""
  monkeypatch.setattr(train, "STREAMED_CORPUS", 0)
  final = run_training(tmp_path / "run", "TRAIN_STEPS = 4")
  meta = json.loads((tmp_path / "run" / "eval_embeddings" / "stdlib_code_search_test" /
                     "meta.json").read_text())
  assert meta["checkpoint"] == str(tmp_path / "run") and meta["step"] == 4
  assert meta["rows"] > 100
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.evaluate",
       f"--gin_file={tmp_path / 'run' / 'config.gin'}", "--gin_file=runs/eval.gin",
       f"--gin.CHECKPOINT_PATH='{tmp_path / 'run'}'",
       "--gin.EVAL_TASKS=['stdlib_code_search_test']"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8"), check=False)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  processes.assert_quiet(done.stdout + done.stderr)
  written = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
  got = written["stdlib_code_search_test"]
  for name in ("P@1", "MRR", "nDCG@10", "Recall@100"):
    assert got[name] == pytest.approx(final[f"retrieval/stdlib_code_search_test/{name}"],
                                      abs=1e-6)
  assert (tmp_path / "run" / "eval" / "embeddings" / "stdlib_code_search_test" /
          "shard-00000.npy").is_file()
  lines = (tmp_path / "run" / "eval" / "stdlib_code_search_test.trec").read_text().splitlines()
  qid, q0, doc, rank, score, tag = lines[0].split()
  assert (q0, rank, tag) == ("Q0", "1", "samtone_jax") and float(score)
