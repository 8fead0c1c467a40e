"""benchmarks/multireqa_study.py: its split rule and grid, and its whole pipeline end to end
on a few SQuAD contexts of the official files (skipped where they are absent)."""

import gzip
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

_BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_BENCHMARKS))  # the study imports _common, as when run as a script
_SPEC = importlib.util.spec_from_file_location("multireqa_study",
                                              _BENCHMARKS / "multireqa_study.py")
study = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(study)


def _mrqa_contexts(path, count):
  """The first `count` contexts of an MRQA file, read with json alone (no project reader)."""
  found = []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      if "header" in record:
        continue
      if len(found) == count:
        break
      found.append(record)
  return found


def _context_qids(candidate_id):
  """The qids of the context that a MultiReQA candidate_id (`SQuAD_<qid>/.../_<n>`) names."""
  return set(candidate_id.rpartition("/_")[0].partition("_")[2].split("/"))


def test_the_grid_is_every_configuration_with_every_seed():
  runs = study.grid(3)
  assert len({r.name for r in runs}) == len(runs) == 3 * 3 * 2
  assert [r.seed for r in runs] == sorted(r.seed for r in runs)
  assert {r.name for r in study.grid(1, "sde_")} == {"sde_in_batch_softmax_seed0",
                                                      "sde_samtone_seed0"}
  assert {r.config for r in study.grid(1, "ade_spl")} == {"ade_spl_in_batch_softmax",
                                                          "ade_spl_samtone"}
  assert len(study.grid(2, "ade_")) == 2 * 4  # a prefix: ADE and ADE-SPL


def test_every_fifth_context_is_held_out(tmp_path):
  source = tmp_path / "mrqa.jsonl"
  source.write_text(json.dumps({"header": {}}) + "\n" + "".join(
      json.dumps({"context": f"c{i}", "qas": []}) + "\n" for i in range(12)))
  train, heldout = study.split_contexts(str(source), tmp_path / "split", None)
  read = lambda path: [json.loads(line)["context"] for line in path.read_text().splitlines()]
  assert read(heldout) == ["c4", "c9"]
  assert read(train) == [f"c{i}" for i in range(12) if i not in (4, 9)]
  train, heldout = study.split_contexts(str(source), tmp_path / "first", 7)
  assert read(heldout) == ["c4"] and read(train) == ["c0", "c1", "c2", "c3", "c5", "c6"]


def test_missing_files_are_named(tmp_path, capsys):
  (tmp_path / "mrqa" / "dev").mkdir(parents=True)
  (tmp_path / "mrqa" / "dev" / "SQuAD.jsonl.gz").write_bytes(b"")
  with pytest.raises(SystemExit) as stop:
    study.check_files(tmp_path)
  message = str(stop.value)
  for missing in ("mrqa/dev/BioASQ.jsonl.gz", "multireqa/data/dev/SQuAD/candidates.json.gz",
                  "multireqa/data/test/BioASQ/candidates.json.gz"):
    assert str(tmp_path / missing) in message
  assert "SQuAD.jsonl.gz" not in message


@pytest.mark.slow  # 3 to 4 minutes: two training runs, each scored on BioASQ's 14k sentences
def test_the_study_end_to_end_on_a_few_contexts(shared_data, tmp_path):
  from samtone_jax import beir_format, bm25  # pylint: disable=g-import-not-at-top
  out = tmp_path / "study"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user's
  done = subprocess.run(
      [sys.executable, str(_BENCHMARKS / "multireqa_study.py"), f"--data_dir={shared_data}",
       f"--out={out}", "--contexts=20", "--only=sde_", "--seeds=1", "--workers=1",
       "--gin=TRAIN_STEPS = 2", "--gin=BATCH_SIZE = 8"],
      cwd=_BENCHMARKS.parent, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "[run 2 of 2]" in done.stdout

  # The split, against the raw file: contexts 4, 9, 14 and 19 held out.
  contexts = _mrqa_contexts(shared_data / "mrqa" / "dev" / "SQuAD.jsonl.gz", 20)
  heldout = [c for i, c in enumerate(contexts) if i % 5 == 4]
  heldout_qids = {qa["qid"] for c in heldout for qa in c["qas"]}
  train_qids = {qa["qid"] for c in contexts for qa in c["qas"]} - heldout_qids
  data = out / "data"
  pairs = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
  assert pairs and all(_context_qids(p["passage_id"]) <= train_qids for p in pairs)
  assert {p["query_id"] for p in pairs} <= train_qids
  corpus = {r["_id"]: r["text"] for r in map(
      json.loads, (data / "squad_heldout" / "corpus.jsonl").read_text().splitlines())}
  assert all(_context_qids(doc_id) <= heldout_qids for doc_id in corpus)
  assert not {p["passage_id"] for p in pairs} & set(corpus)
  assert not {p["passage"] for p in pairs} & set(corpus.values())
  qrels = beir_format.read_qrels(data / "squad_heldout" / "qrels" / "test.tsv")
  answers = {qa["qid"]: {a["text"] for a in qa["detected_answers"]}
             for c in heldout for qa in c["qas"]}
  assert 0.9 * len(answers) <= len(qrels) <= len(answers)
  for qid, judged in qrels.items():  # an answer of each held-out question is in a judged one
    assert set(judged) <= set(corpus)
    assert any(answer in corpus[doc] for doc in judged for answer in answers[qid])

  report = json.loads((out / "multireqa_study.json").read_text())
  assert set(report["summary"]) == {"sde_in_batch_softmax", "sde_samtone"}
  assert set(report["runs"]) == {"sde_in_batch_softmax_seed0", "sde_samtone_seed0"}
  columns = {f"{f}/{m}" for f in ("squad_heldout", "bioasq") for m in ("P@1", "MRR")}
  for name, run in report["runs"].items():
    metrics = json.loads((out / "runs" / name / "metrics.json").read_text())
    assert run["metrics"] == {c: metrics[f"retrieval/beir_{c}"] for c in columns}
    assert run["seconds"] > 0
    summary = report["summary"][name.rsplit("_seed", 1)[0]]
    assert {c: s["mean"] for c, s in summary.items()} == run["metrics"]
  for folder in ("squad_heldout", "bioasq"):
    want, _ = bm25.evaluate(beir_format.eval_set(data / folder))
    for m in ("P@1", "MRR"):
      assert report["bm25"][f"{folder}/{m}"] == want[m]
  assert report["machine"]["cpu"] and report["machine"]["cores"] and report["date"]
  table = (out / "multireqa_study.md").read_text()
  assert f"| BM25 | | {report['bm25']['squad_heldout/P@1']:.3f} |" in table
  assert "| SDE | in-batch softmax |" in table and "| SDE | SamToNe (query) |" in table
  assert "| ADE" not in table
  for figure in ("figure5_top1_similarity.png", "figure6_qq_over_qp.png"):
    assert (out / "figures" / "sde" / figure).stat().st_size > 0
