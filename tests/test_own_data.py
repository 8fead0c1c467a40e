"""Own data, no code: JSONL / TSV pairs named in gin, a BEIR-format folder named by path."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import gin
import numpy as np
import pytest
import seqio

from samtone_jax import bm25, data_files, eval_sets, inputs, pairs_format, partitioning
from samtone_jax.tasks import own_data, preprocessors, vocabularies

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = ["parse", "date", "read", "file", "sort", "list", "join", "path", "split", "text",
         "open", "socket", "write", "json", "copy", "tree", "hash", "bytes", "send", "mail"]


def _pair(i: int) -> tuple[str, str]:
  a, b = WORDS[i % 20], WORDS[(i * 7 + 3) % 20]
  return f"how do I {a} the {b}", f"def {a}_{b}(x):\n    return {a}({b}(x))"


def _tsv_pair(i: int) -> tuple[str, str]:
  return tuple(text.replace("\n", " ") for text in _pair(i))


@pytest.fixture
def folder(tmp_path):
  """train.jsonl (with negatives), dev.tsv, and a BEIR folder `eval/` of 20 queries."""
  with open(tmp_path / "train.jsonl", "w") as f:
    for i in range(64):
      query, passage = _pair(i)
      record = {"query": query, ("passage" if i % 2 else "positive"): passage,
                "negatives": [_pair(i + 1)[1], _pair(i + 2)[1]][:1 + i % 2]}
      f.write(json.dumps(record) + "\n")
  (tmp_path / "dev.tsv").write_text("".join("\t".join(_tsv_pair(i)) + "\n"
                                            for i in range(64, 96)))
  beir = tmp_path / "eval"
  (beir / "qrels").mkdir(parents=True)
  (beir / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": f"d{i}", "title": "", "text": _pair(i)[1]}) + "\n" for i in range(40)))
  (beir / "queries.jsonl").write_text("".join(
      json.dumps({"_id": f"q{i}", "text": _pair(i)[0]}) + "\n" for i in range(20)))
  (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"q{i}\td{i}\t1\n" for i in range(20)))
  return tmp_path


@pytest.fixture
def bound():
  """bound(**files): binds own_data.pairs_files and the quickstart vocabulary."""
  def bind(**values):
    gin.clear_config()
    with gin.unlock_config():
      gin.bind_parameter("vocabularies.t5_vocabulary_path.path", vocabularies.QUICKSTART_PATH)
      for name, value in values.items():
        gin.bind_parameter(f"own_data.pairs_files.{name}", value)
  yield bind
  gin.clear_config()


def test_the_examples_of_both_formats(folder, bound):
  examples = list(pairs_format.read_examples(str(folder / "train.jsonl")))
  assert len(examples) == 64
  assert (examples[0]["query"], examples[0]["passage"]) == _pair(0)
  assert examples[1]["negatives"] == [_pair(2)[1], _pair(3)[1]]
  tsv = list(pairs_format.read_examples(str(folder / "dev.tsv")))
  assert [(e["query"], e["passage"]) for e in tsv] == [_tsv_pair(i) for i in range(64, 96)]

  bound(train=[str(folder / "train.jsonl")], validation=[str(folder / "dev.tsv")],
        num_negatives=2)
  got = list(seqio.get_mixture_or_task("own_pairs_with_negatives").get_dataset(
      {"queries": 16, "passages": 32}, "train", shuffle=False).as_numpy_iterator())
  assert len(got) == 32  # the examples with one negative are dropped
  vocabulary = vocabularies.quickstart_vocabulary()
  assert vocabulary.decode(got[0]["queries"].tolist()) == _pair(1)[0]
  assert got[0]["negative_passages"].shape[0] == 2
  assert got[0]["negative_passage_ids"].tolist() == [
      int(preprocessors.content_id(n)) for n in (_pair(2)[1], _pair(3)[1])]


def test_ids_name_the_items_in_place_of_their_texts(tmp_path, bound):
  """Two lines of one query_id are one query; a negative with its positive's passage_id is
  that passage (masked in the loss); an id is never taken for a text."""
  lines = [{"query": "how to sort", "query_id": 7, "passage": "sorted(x)", "passage_id": "p1",
            "negatives": ["x.sort()", "heapq"], "negative_ids": ["p1", "p2"]},
           {"query": "sorting a list", "query_id": 7, "passage": "list.sort",
            "passage_id": "p3", "negatives": ["heapq", "x"], "negative_ids": ["p2", 5]},
           {"query": "7", "query_id": "8", "passage": "p4", "passage_id": 5,
            "negatives": ["sorted(x)", "y"], "negative_ids": ["p5", "p6"]}]
  (tmp_path / "ids.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  (tmp_path / "plain.jsonl").write_text('{"query": "q", "passage": "p", "negatives": ["n"]}\n')
  bound(train=[str(tmp_path / "ids.jsonl")], num_negatives=2)
  got = list(seqio.get_mixture_or_task("own_pairs_with_negatives").get_dataset(
      {"queries": 8, "passages": 8}, "train", shuffle=False).as_numpy_iterator())
  qids = [int(g["query_ids"]) for g in got]
  pids = [int(g["passage_ids"]) for g in got]
  nids = [g["negative_passage_ids"].tolist() for g in got]
  assert qids[0] == qids[1] != qids[2] and len(set(pids)) == 3
  assert nids[0][0] == pids[0] and nids[0][1] == nids[1][0] and nids[1][1] == pids[2]
  texts = {int(preprocessors.content_id(t)) for t in ("7", "8", "p1", "p4", "sorted(x)", "5")}
  assert not texts & {*qids, *pids, *nids[2]}
  assert got[0]["negative_passages"].shape[0] == 2  # the texts are still those encoded

  bound(train=[str(tmp_path / "ids.jsonl"), str(tmp_path / "plain.jsonl")], num_negatives=1)
  with pytest.raises(data_files.DataError, match=r"plain.jsonl: id fields \[\] where .*ids.jsonl"
                                                 r" has \['query_id', 'passage_id'\]"):
    list(seqio.get_mixture_or_task("own_pairs_with_negatives").get_dataset(
        {"queries": 8, "passages": 8}, "train", shuffle=False).as_numpy_iterator())


def _pools_file(path, sizes):
  """Example i: query i, passage i, a pool of sizes[i] negatives (texts "neg i.j")."""
  with open(path, "w") as f:
    for i, size in enumerate(sizes):
      f.write(json.dumps({"query": f"query {i}", "passage": f"passage {i}",
                          "negatives": [f"neg {i}.{j}" for j in range(size)]}) + "\n")


def _drawn(batches, count):
  """{query id: [the k negative ids of each batch it came in]} over `count` batches."""
  drawn = {}
  for _ in range(count):
    batch = next(batches)
    for qid, nids in zip(np.asarray(batch["query_ids"]), np.asarray(batch["negative_passage_ids"])):
      drawn.setdefault(int(qid), []).append(nids.tolist())
  return drawn


def test_k_negatives_are_drawn_anew_each_epoch_and_resume_exactly(tmp_path, bound):
  sizes = [5] * 14 + [1, 0]
  _pools_file(tmp_path / "train.jsonl", sizes)
  bound(train=[str(tmp_path / "train.jsonl")], num_negatives=2, short_pools="pad")
  make = lambda seed: inputs.GlobalBatches(
      "own_pairs_with_negatives", "train", {"queries": 8, "passages": 8}, 8,
      partitioning.create_mesh(), seed=seed, num_negatives=2)
  drawn = _drawn(make(0), 8)  # 4 epochs of 2 batches (seqio's shuffle blends epochs)
  pools = {int(preprocessors.content_id(f"query {i}")): [
      int(preprocessors.content_id(f"neg {i}.{j}")) for j in range(size)]
      for i, size in enumerate(sizes)}
  assert drawn.keys() <= pools.keys() and sum(map(len, drawn.values())) == 64
  for qid, draws in drawn.items():
    pool = pools[qid]
    if len(pool) >= 2:  # k distinct negatives of the pool, not all epochs alike
      assert all(len(set(d)) == 2 and set(d) <= set(pool) for d in draws)
    else:  # the whole pool, then empty slots (id -1)
      assert all(d == pool + [-1] * (2 - len(pool)) for d in draws)
  seen_again = [draws for qid, draws in drawn.items() if len(draws) > 2 and len(pools[qid]) > 2]
  assert sum(len({tuple(d) for d in draws}) > 1 for draws in seen_again) >= len(seen_again) - 1
  assert _drawn(make(0), 8) == drawn
  assert _drawn(make(1), 8) != drawn

  batches = make(0)
  _drawn(batches, 3)
  batches.save(tmp_path)
  want = _drawn(batches, 3)
  resumed = make(0)
  resumed.restore(tmp_path)
  assert _drawn(resumed, 3) == want


def test_short_pools_are_dropped_by_default(tmp_path, bound, caplog):
  _pools_file(tmp_path / "train.jsonl", [3, 1, 0, 2])
  bound(train=[str(tmp_path / "train.jsonl")], num_negatives=2)
  with caplog.at_level(logging.WARNING):
    got = list(seqio.get_mixture_or_task("own_pairs_with_negatives").get_dataset(
        {"queries": 8, "passages": 8}, "train", shuffle=False).as_numpy_iterator())
  assert [int(g["query_ids"]) for g in got] == [
      int(preprocessors.content_id(f"query {i}")) for i in (0, 3)]
  assert "dropped 2 examples with fewer than NUM_NEGATIVES=2" in caplog.text
  with pytest.raises(ValueError, match="SHORT_POOLS"):
    own_data.pairs_files(short_pools="repeat")


def test_negatives_need_their_task_and_training_files_are_required(folder, bound):
  bound(train=[str(folder / "train.jsonl")], num_negatives=1)
  with pytest.raises(ValueError, match="own_pairs_with_negatives"):
    seqio.get_mixture_or_task("own_pairs").get_dataset(None, "train")
  bound()
  with pytest.raises(ValueError, match="no training files; set TRAIN_FILES"):
    seqio.get_mixture_or_task("own_pairs").get_dataset(None, "train")


def test_a_beir_folder_by_path(folder):
  found = eval_sets.get(f"beir:{folder / 'eval'}")
  assert len(found.queries) == 20 and len(found.corpus) == 40
  assert found.qrels["q3"] == {"d3": 1}
  dev = f"beir:{folder / 'eval'}#dev"
  assert eval_sets.short_names([dev]) == {dev: "beir_eval_dev"}
  with pytest.raises(data_files.DataError, match="qrels/dev.tsv"):
    eval_sets.get(f"beir:{folder / 'eval'}#dev")


def test_train_and_evaluate_own_data_through_the_command_line(folder, subprocess_env):
  """experiments/own_data.gin with the quickstart's model and vocabulary: trains on the
  JSONL file, evaluates in-batch on the TSV file and on the BEIR folder, then `evaluate`
  reproduces the final retrieval metrics."""
  eval_set = f"beir:{folder / 'eval'}"
  common = [f"--gin.vocabularies.t5_vocabulary_path.path='{vocabularies.QUICKSTART_PATH}'",
            f"--gin.EVAL_TASKS=['{eval_set}']"]
  env = dict(os.environ, **subprocess_env, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  run = folder / "run"
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.train", "--gin_file=experiments/own_data.gin",
       "--gin_file=models/t5_1_1_quickstart.gin", f"--gin.MODEL_DIR='{run}'",
       f"--gin.TRAIN_FILES=['{folder / 'train.jsonl'}']",
       f"--gin.VALIDATION_FILES=['{folder / 'dev.tsv'}']", "--gin.EVAL_SPLIT='validation'",
       "--gin.TRAIN_STEPS=6", "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=6",
       "--gin.EVAL_PERIOD=6", "--gin.TASK_FEATURE_LENGTHS={'queries': 16, 'passages': 32}",
       "--gin.settings.Evaluation.batches=2", *common],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  metrics = json.loads((run / "metrics.json").read_text())
  assert metrics["step"] == 6 and "eval/loss" in metrics
  assert 0 < metrics["retrieval/beir_eval/MRR"] <= 1
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.evaluate", f"--gin_file={run / 'config.gin'}",
       "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH='{run}'",
       "--gin.EVAL_BASELINES=['bm25']", *common],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  written = json.loads((run / "eval" / "metrics.json").read_text())
  assert written["beir_eval"]["MRR"] == pytest.approx(metrics["retrieval/beir_eval/MRR"],
                                                      abs=1e-6)
  assert (run / "eval" / "beir_eval.trec").is_file()
  assert written["beir_eval_bm25"] == bm25.evaluate(eval_sets.get(eval_set))[0]

  # Mine negatives with the trained model, then train on them: 2 a query, drawn from 5.
  mined = folder / "mined.jsonl"
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.mine", f"--gin_file={run / 'config.gin'}",
       "--gin_file=runs/mine.gin", f"--gin.CHECKPOINT_PATH='{run}'",
       f"--gin.MINE_INPUT_FILES=['{folder / 'train.jsonl'}']", f"--gin.MINE_OUTPUT_FILE='{mined}'",
       "--gin.MINE_TOP_N=5", common[0]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  lines = [json.loads(line) for line in mined.read_text().splitlines()]
  assert len(lines) == 64 and all(len(line["negatives"]) == 5 for line in lines)
  answers = {}
  for line in lines:
    answers.setdefault(line["query"], set()).add(line["passage"])
  assert all(not answers[line["query"]] & set(line["negatives"]) for line in lines)
  done = subprocess.run(
      [sys.executable, "-m", "samtone_jax.train", "--gin_file=experiments/own_data.gin",
       "--gin_file=models/t5_1_1_quickstart.gin", f"--gin.MODEL_DIR='{folder / 'run2'}'",
       f"--gin.TRAIN_FILES=['{mined}']", "--gin.MIXTURE_OR_TASK_NAME='own_pairs_with_negatives'",
       "--gin.NUM_NEGATIVES=2", "--gin.MASK_DUPLICATES=True", "--gin.TRAIN_STEPS=2",
       "--gin.BATCH_SIZE=8", "--gin.TASK_FEATURE_LENGTHS={'queries': 16, 'passages': 32}",
       common[0]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  assert json.loads((folder / "run2" / "metrics.json").read_text())["step"] == 2
