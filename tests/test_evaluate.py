"""`evaluate` in process: one row a set, embeddings made again when what made them changed,
and one checkpoint step a command."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import seqio

from samtone_jax import embedding_shards, evaluate, run_dir
from samtone_jax.tasks import vocabularies

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
