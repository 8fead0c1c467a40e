r"""The paper's comparison on MultiReQA's own data: SQuAD and BioASQ, from the official files.

  python benchmarks/multireqa_study.py --data_dir=$SAMTONE_DATA_DIR --out=/tmp/multireqa_study \
      [--seeds=3] [--workers=2]

DATA_DIR is laid out as for the registered sets `multireqa_squad` and `multireqa_bioasq`
(tasks/multireqa.py, `paths`): mrqa/dev/{SQuAD,BioASQ}.jsonl.gz and
multireqa/data/dev/SQuAD/candidates.json.gz, multireqa/data/test/BioASQ/candidates.json.gz.

1. Data (OUT/data), read through tasks/multireqa.py's `build`, as the registered sets:
   - SQuAD dev's contexts are split by a fixed rule: context i (0-based, in the file's order)
     is held out if i % 5 == 4 (a fifth), else it is a training context. Each part is built
     on its own (a question's relevant sentences are those of its own context; questions of
     equal text are one query within a part).
   - train.jsonl: (question, the MultiReQA sentence holding its answer) of the training
     contexts, in the pairs format (samtone_jax/pairs_format.py), with their ids.
   - squad_heldout/: the held-out questions against every sentence of the held-out contexts,
     a BEIR folder (split "test"); bioasq/: BioASQ's whole MultiReQA set, the same way.
   - spm.model: a SentencePiece unigram vocabulary of 2,000 pieces at most (T5's special ids),
     trained on the training contexts' text only.
   - split.json: the split's counts.
2. Runs (OUT/runs/<arch>_<loss>_seed<k>): SDE, ADE and ADE-SPL x {in-batch softmax, SamToNe
   (query side)} x `--seeds`, each `python -m samtone_jax.train` with
   experiments/multireqa_study.gin (the quickstart's small model from random initialisation,
   500 steps of batch 64), scored on both folders: P@1 and MRR of every query against its
   whole pool. A run with a metrics.json is done and is skipped; an interrupted one resumes
   from its checkpoint: after a crash, rerun the command. `--workers` runs go at a time, each
   on one CPU thread when there are several.
3. BM25 (samtone_jax/bm25.py, the project's EVAL_BASELINES) on the same two folders.
4. OUT/multireqa_study.json (per run and per configuration: the metrics, mean ± standard
   deviation over seeds, each run's wall time; BM25's row; the machine), OUT/multireqa_study.md
   (the table) and OUT/figures/{sde,ade}/ (samtone_jax.analysis: the paper's Figures 5 and 6,
   in-batch softmax against SamToNe, seed 0, on the held-out SQuAD questions).

--contexts=N uses only SQuAD's first N contexts, --only=PREFIX only the configurations whose
name starts with PREFIX (e.g. sde_), and --gin='NAME = VALUE' (repeatable) binds a gin macro in
every run (e.g. --gin='TRAIN_STEPS = 2'): a quick end-to-end check.
"""

import argparse
import concurrent.futures
import dataclasses
import io
import json
import logging
import pathlib
import sys
import time
from typing import Any, Optional

import _common  # pylint: disable=g-bad-import-order  (this folder)

ARCHITECTURES = {"sde": "SDE", "ade": "ADE", "ade_spl": "ADE-SPL"}
LOSSES = {"in_batch_softmax": "in-batch softmax", "samtone": "SamToNe (query)"}
EVAL_FOLDERS = {"squad_heldout": "SQuAD, held-out contexts", "bioasq": "BioASQ"}
METRICS = ("P@1", "MRR")
HELD_OUT_EVERY = 5  # context i is held out iff i % 5 == 4
VOCABULARY_SIZE = 2000
SPM_OPTIONS = dict(model_type="unigram", vocab_size=VOCABULARY_SIZE, hard_vocab_limit=False,
                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, byte_fallback=True,
                   max_sentence_length=1 << 16, input_sentence_size=0,
                   shuffle_input_sentence=False, num_threads=1, minloglevel=1)


def required_files(data_dir: pathlib.Path) -> dict[str, tuple[str, str]]:
  """{"squad", "bioasq": (MRQA file, MultiReQA candidates file)} under `data_dir`."""
  from samtone_jax.tasks import multireqa  # pylint: disable=g-import-not-at-top
  return {"squad": multireqa.paths(data_dir, "SQuAD", "dev"),
          "bioasq": multireqa.paths(data_dir, "BioASQ", "test")}


def check_files(data_dir: pathlib.Path) -> None:
  """Exits naming every missing file, and the layout expected."""
  missing = [path for found in required_files(data_dir).values() for path in found
             if not pathlib.Path(path).is_file()]
  if missing:
    sys.exit(f"--data_dir={data_dir} lacks the files:\n  " + "\n  ".join(missing)
             + "\n(the MRQA 2019 dev files SQuAD and BioASQ, and MultiReQA's data/ folder,"
             " laid out as for $SAMTONE_DATA_DIR)")


def split_contexts(mrqa_path: str, folder: pathlib.Path,
                   contexts: Optional[int]) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes SQuAD's contexts (the first `contexts`, or all) as two MRQA files,
  folder/{train,heldout}.jsonl: context i (0-based) held out iff i % 5 == 4."""
  from samtone_jax import data_files  # pylint: disable=g-import-not-at-top
  folder.mkdir(parents=True, exist_ok=True)
  parts = {"train": [], "heldout": []}
  i = 0
  for _, record in data_files.iter_jsonl(mrqa_path):
    if isinstance(record, dict) and "header" in record:  # as multireqa.read_mrqa
      continue
    if contexts is not None and i == contexts:
      break
    parts["heldout" if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"].append(record)
    i += 1
  paths = {}
  for name, records in parts.items():
    paths[name] = folder / f"{name}.jsonl"
    paths[name].write_text("".join(json.dumps(r) + "\n" for r in records))
  return paths["train"], paths["heldout"]


def write_beir(folder: pathlib.Path, eval_set: Any) -> None:
  """Writes a `RetrievalSet` as a BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv."""
  (folder / "qrels").mkdir(parents=True, exist_ok=True)
  (folder / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in eval_set.corpus.items()))
  (folder / "queries.jsonl").write_text("".join(
      json.dumps({"_id": i, "text": t}) + "\n" for i, t in eval_set.queries.items()))
  (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"{q}\t{d}\t{r}\n" for q, judged in eval_set.qrels.items() for d, r in judged.items()))


def train_vocabulary(mrqa_path: pathlib.Path, path: pathlib.Path) -> int:
  """Trains the SentencePiece model on the contexts of an MRQA file; returns its size."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  from samtone_jax.tasks import multireqa  # pylint: disable=g-import-not-at-top
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=(c.context for c in multireqa.read_mrqa(mrqa_path)),
      model_writer=model, **SPM_OPTIONS)
  path.write_bytes(model.getvalue())
  return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


def prepare(data_dir: pathlib.Path, data: pathlib.Path, contexts: Optional[int]) -> dict:
  """Writes OUT/data (see the module docstring) unless split.json says it is there for the
  same `contexts`; returns split.json's content."""
  from samtone_jax.tasks import multireqa  # pylint: disable=g-import-not-at-top
  done = data / "split.json"
  if done.exists() and json.loads(done.read_text())["contexts_used"] == contexts:
    return json.loads(done.read_text())
  files = required_files(data_dir)
  train_mrqa, heldout_mrqa = split_contexts(files["squad"][0], data / "squad_split", contexts)
  # A part matches a fraction of the candidate groups: the others' warning says nothing here.
  logging.getLogger(multireqa.__name__).setLevel(logging.ERROR)
  pairs, _, train_stats = multireqa.build(train_mrqa, files["squad"][1], "squad_train")
  _, heldout, heldout_stats = multireqa.build(heldout_mrqa, files["squad"][1], "squad_heldout")
  _, bioasq, bioasq_stats = multireqa.build(*files["bioasq"], "bioasq")
  (data / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
  write_beir(data / "squad_heldout", heldout)
  write_beir(data / "bioasq", bioasq)
  pieces = train_vocabulary(train_mrqa, data / "spm.model")
  split = {"rule": f"SQuAD dev context i (0-based, file order) held out iff i % {HELD_OUT_EVERY}"
                   f" == {HELD_OUT_EVERY - 1}", "contexts_used": contexts,
           "vocabulary_pieces": pieces, "train": train_stats, "squad_heldout": heldout_stats,
           "bioasq": bioasq_stats}
  done.write_text(json.dumps(split, indent=2))
  return split


@dataclasses.dataclass(frozen=True)
class Run:
  architecture: str
  loss: str
  seed: int

  @property
  def config(self) -> str:
    return f"{self.architecture}_{self.loss}"

  @property
  def name(self) -> str:
    return f"{self.config}_seed{self.seed}"


def grid(seeds: int, only: str = "") -> list[Run]:
  """The runs seed by seed (a partial study has whole seeds), those whose configuration
  name starts with `only`."""
  return [Run(a, l, s) for s in range(seeds) for a in ARCHITECTURES for l in LOSSES
          if f"{a}_{l}".startswith(only)]


def eval_tasks(data: pathlib.Path) -> list[str]:
  return [f"beir:{data / name}" for name in EVAL_FOLDERS]


def metric_key(folder: str, metric: str) -> str:
  """The key of a run's metrics.json (the evaluator names a `beir:` set by its folder)."""
  return f"retrieval/beir_{folder}/{metric}"


def train(run: Run, out: pathlib.Path, extra: tuple[str, ...], one_thread: bool) -> dict:
  """Trains `run` in a subprocess unless its metrics.json exists; returns its metrics and the
  wall seconds of the training (None where an earlier invocation did not record them)."""
  model_dir, data = out / "runs" / run.name, out / "data"
  timing = model_dir / "study_seconds.json"
  if not (model_dir / "metrics.json").exists():
    model_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _common.run_logged(  # this checkout's gin files, whichever copy of the library is installed
        [sys.executable, "-m", "samtone_jax.train",
         f"--gin_search_paths={_common.ROOT / 'gin_configs'}",
         "--gin_file=experiments/multireqa_study.gin",
         f"--gin_file=architectures/{run.architecture}.gin", f"--gin_file=losses/{run.loss}.gin",
         f"--gin.MODEL_DIR='{model_dir}'", f"--gin.SEED={run.seed}",
         f"--gin.TRAIN_FILES=['{data / 'train.jsonl'}']",
         f"--gin.EVAL_TASKS={eval_tasks(data)!r}",
         f"--gin.vocabularies.t5_vocabulary_path.path='{data / 'spm.model'}'",
         *(f"--gin.{binding}" for binding in extra)], model_dir / "train.log", one_thread)
    timing.write_text(json.dumps({"seconds": time.perf_counter() - start}))
  metrics = json.loads((model_dir / "metrics.json").read_text())
  seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else None
  return {"metrics": {f"{f}/{m}": metrics[metric_key(f, m)]
                      for f in EVAL_FOLDERS for m in METRICS}, "seconds": seconds}


def bm25_row(data: pathlib.Path) -> dict[str, float]:
  """BM25's {"<folder>/<metric>": value} on the two folders."""
  from samtone_jax import beir_format, bm25  # pylint: disable=g-import-not-at-top
  row = {}
  for folder in EVAL_FOLDERS:
    metrics, _ = bm25.evaluate(beir_format.eval_set(data / folder))
    row.update({f"{folder}/{m}": metrics[m] for m in METRICS})
  return row


def summarise(results: dict[str, dict]) -> dict[str, dict]:
  """{configuration: {"<folder>/<metric>": mean_std over its seeds}} of the finished runs."""
  by_config = {}
  for name, result in results.items():
    by_config.setdefault(name.rsplit("_seed", 1)[0], []).append(result["metrics"])
  return {config: {key: _common.mean_std([m[key] for m in found]) for key in found[0]}
          for config, found in by_config.items()}


COLUMNS = [(f, m) for f in EVAL_FOLDERS for m in METRICS]


def markdown(summary: dict, bm25: dict, seeds: int, split: dict) -> str:
  """The table: BM25 and each configuration, P@1 and MRR on both sets, mean ± std."""
  heldout, bioasq = split["squad_heldout"], split["bioasq"]
  lines = [f"Mean ± standard deviation over {seeds} seeds. SQuAD held-out:"
           f" {heldout['queries']} questions against {heldout['sentences']} sentences;"
           f" BioASQ: {bioasq['queries']} questions against {bioasq['sentences']} sentences;"
           f" trained on {split['train']['pairs']} pairs.", "",
           "| model | loss | " + " | ".join(f"{m}, {EVAL_FOLDERS[f]}" for f, m in COLUMNS) + " |",
           "|---|---|" + "---|" * len(COLUMNS),
           "| BM25 | | " + " | ".join(f"{bm25[f'{f}/{m}']:.3f}" for f, m in COLUMNS) + " |"]
  for a, arch in ARCHITECTURES.items():
    for l, loss in LOSSES.items():
      cells = summary.get(f"{a}_{l}")
      if cells is not None:
        lines.append(f"| {arch} | {loss} | "
                     + " | ".join(_common.mean_std_text(cells[f"{f}/{m}"]) for f, m in COLUMNS)
                     + " |")
  return "\n".join(lines) + "\n"


def figures(out: pathlib.Path) -> list[str]:
  """samtone_jax.analysis of SDE and ADE, softmax against SamToNe (seed 0), on the held-out
  SQuAD set, in OUT/figures/<arch>; the folders drawn."""
  drawn = []
  for arch in ("sde", "ade"):
    pair = [out / "runs" / f"{arch}_{loss}_seed0" for loss in LOSSES]
    if all((run / "metrics.json").exists() for run in pair):
      _common.run_logged(
          [sys.executable, "-m", "samtone_jax.analysis",
           *(f"--checkpoint={run}" for run in pair), *(f"--label={l}" for l in LOSSES.values()),
           f"--task=beir:{out / 'data' / 'squad_heldout'}", f"--out={out / 'figures' / arch}"],
          out / f"analysis_{arch}.log", one_thread=False)
      drawn.append(str(out / "figures" / arch))
  return drawn


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", type=pathlib.Path, required=True,
                      help="the official files, laid out as $SAMTONE_DATA_DIR")
  parser.add_argument("--out", type=pathlib.Path, required=True, help="the study's folder")
  parser.add_argument("--seeds", type=int, default=3, help="seeds of each configuration")
  parser.add_argument("--workers", type=int, default=2, help="runs at a time")
  parser.add_argument("--contexts", type=int, default=None,
                      help="use only SQuAD's first N contexts (a quick check)")
  parser.add_argument("--only", default="",
                      help="only the configurations whose name starts with this, e.g. sde_")
  parser.add_argument("--gin", action="append", default=[],
                      help="a gin binding for every run, e.g. --gin='TRAIN_STEPS = 2'")
  args = parser.parse_args()
  from samtone_jax import launch  # pylint: disable=g-import-not-at-top
  launch.setup_host()  # TensorFlow (the readers') on the host, quietly
  check_files(args.data_dir)
  out = args.out.absolute()
  (out / "data").mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()

  machine = _common.machine(devices=False)  # no JAX backend here: the runs start their own
  described = f"{machine['cpu']}, {machine['cores']} cores"
  print(f"Preparing {out / 'data'} from {args.data_dir}", flush=True)
  split = prepare(args.data_dir, out / "data", args.contexts)
  runs = grid(args.seeds, args.only)
  print(f"{len(runs)} runs in {out / 'runs'}, {args.workers} at a time, on {described}",
        flush=True)
  results, failed = {}, {}
  with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
    pending = {pool.submit(train, run, out, tuple(args.gin), args.workers > 1): run
               for run in runs}
    for future in concurrent.futures.as_completed(pending):
      run = pending[future]
      try:
        results[run.name] = future.result()
      except RuntimeError as e:
        failed[run.name] = str(e)
      finished = len(results) + len(failed)
      elapsed = time.perf_counter() - start
      outcome = (f"FAILED: {failed[run.name]}" if run.name in failed else " ".join(
          f"{k} {v:.3f}" for k, v in results[run.name]["metrics"].items()))
      print(f"[run {finished} of {len(runs)}] {run.name}: {outcome}; {elapsed / 60:.1f} min"
            f" elapsed", flush=True)

  print("BM25 on both sets", flush=True)
  bm25 = bm25_row(out / "data")
  summary = summarise(results)
  table = markdown(summary, bm25, args.seeds, split)
  drawn = figures(out)
  wall = time.perf_counter() - start
  report = {"benchmark": "multireqa_study", "machine": machine, "date": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "workers": args.workers, "seeds": args.seeds, "contexts": args.contexts,
            "gin": args.gin, "invocation_wall_seconds": wall, "split": split, "bm25": bm25,
            "summary": summary, "runs": results, "failed": failed, "figures": drawn}
  (out / "multireqa_study.json").write_text(json.dumps(report, indent=2, sort_keys=True))
  (out / "multireqa_study.md").write_text(table)
  print(table)
  print(f"{len(results)} runs done, {len(failed)} failed; {wall / 60:.1f} min on {described};"
        f" wrote {out / 'multireqa_study.json'}, {out / 'multireqa_study.md'}"
        + (f" and the figures in {', '.join(drawn)}" if drawn else ""))
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  main()
