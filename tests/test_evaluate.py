"""`evaluate` in process: one row a set, embeddings made again when what made them changed,
and one checkpoint step a command."""

import json

import seqio

from samtone_jax import evaluate

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
