r"""Corpus-level evaluation of a checkpoint: `python -m samtone_jax.evaluate --gin_file=...`.

  python -m samtone_jax.evaluate --gin_file=/tmp/run/config.gin --gin_file=runs/eval.gin \
      --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.EVAL_TASKS="['stdlib_code_search_test']"

The model comes from the gin files (a run's own MODEL_DIR/config.gin, or a models/*.gin
file with its overrides); CHECKPOINT_PATH is a training MODEL_DIR (its latest checkpoint),
one of its `checkpoints/<step>` folders, or a Hugging Face T5 / sentence-transformers (GTR)
folder. Each evaluation set of EVAL_TASKS (eval_sets.py) is ranked in full (top
EVAL_K) and scored; EVAL_OUTPUT_DIR (default CHECKPOINT_PATH/eval) gets metrics.json
({set: {metric: value}}), one TREC run file a set (`<set>.trec`: `qid Q0 docid rank
score samtone_jax`), and the corpus embeddings of each set (`embeddings/<set>/`, shards as
`python -m samtone_jax.encode` writes them): a corpus is embedded a batch at a time and
searched a chunk at a time, so that memory stays bounded whatever its size, and a killed
evaluation, run again, embeds only the shards it had not written (those made of other
texts, another vocabulary, model config, checkpoint or step are replaced). The latest
checkpoint is looked up once: its parameters are the ones the outputs are labelled with. A
set named `beir:<folder>` (any BEIR-format folder) is reported as `beir_<folder name>`; two
folders of one name as `beir_<parent>_<folder name>` (`eval_sets.short_names`). With
EVAL_BASELINES = ['bm25'], each set also gets BM25's row, `<set>_bm25`, scored the same way
(samtone_jax/bm25.py).
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

from typing import Optional, Sequence

import gin

from samtone_jax import dual_encoder, embedder, evaluator, launch, run_dir


def evaluate(*, model: dual_encoder.DualEncoder = gin.REQUIRED,
             checkpoint_path: str = gin.REQUIRED, eval_tasks: Sequence[str] = gin.REQUIRED,
             task_feature_lengths: dict = gin.REQUIRED, output_dir: Optional[str] = None,
             mixture_or_task_name: Optional[str] = None, vocabulary=None, k: int = 1000,
             num_partitions: int = 1, batch_size: int = 256,
             baselines: Sequence[str] = ()) -> dict[str, dict[str, float]]:
  """Scores `model` at `checkpoint_path` on each evaluation set; returns and writes them.

  Args:
    model: the DualEncoder (MODEL).
    checkpoint_path: see the module docstring (CHECKPOINT_PATH).
    eval_tasks: evaluation set names (EVAL_TASKS).
    output_dir: where metrics.json and the run files go (EVAL_OUTPUT_DIR; None:
      CHECKPOINT_PATH/eval).
    task_feature_lengths: {"queries": Lq, "passages": Lp}: texts are cut to these.
    mixture_or_task_name, vocabulary: the vocabulary, or the task whose vocabulary to use.
    k: documents ranked a query (the full pool when it is smaller).
    num_partitions: the mesh's "model" axis.
    batch_size: texts embedded at a time.
    baselines: () or ["bm25"]: rows of a first-stage baseline beside the model's
      (EVAL_BASELINES).
  """
  if isinstance(eval_tasks, str) or not eval_tasks:
    raise ValueError(f"EVAL_TASKS={eval_tasks!r}: name a list of one or more sets, e.g."
                     " --gin.EVAL_TASKS=\"['beir:/data/mine/eval']\" (a run's config.gin gives"
                     " the sets it was evaluated on, if any).")
  vocabulary = embedder.resolve_vocabulary(vocabulary, mixture_or_task_name)
  output = (run_dir.EvalDir(output_dir) if output_dir
            else run_dir.RunDir(checkpoint_path).eval)
  evaluation = evaluator.Evaluator(eval_tasks, k=k, baselines=baselines,  # sets read now
                                   embeddings_dir=output.embeddings)
  embed = embedder.Embedder.from_checkpoint(
      model, checkpoint_path, task_feature_lengths, vocabulary=vocabulary,
      num_partitions=num_partitions, batch_size=batch_size)
  output.path.mkdir(parents=True, exist_ok=True)
  return evaluation(embed, output)


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.run_configurable(evaluate, argv)


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import evaluate as _evaluate_module  # pylint: disable=g-import-not-at-top
  _evaluate_module.main()
