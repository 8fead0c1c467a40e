r"""Corpus-level evaluation of a checkpoint: `python -m samtone_jax.evaluate --gin_file=...`.

  python -m samtone_jax.evaluate --gin_file=/tmp/run/config.gin --gin_file=runs/eval.gin \
      --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.EVAL_TASKS="['stdlib_code_search_test']"

The model comes from the gin files (a run's own MODEL_DIR/config.gin, or a models/*.gin
file with its overrides); CHECKPOINT_PATH is a training MODEL_DIR (its latest checkpoint),
one of its `checkpoints/<step>` folders, or a Hugging Face T5 / sentence-transformers (GTR)
folder. Each evaluation set of EVAL_TASKS (tasks/eval_sets.py) is ranked in full (top
EVAL_K) and scored; EVAL_OUTPUT_DIR (default CHECKPOINT_PATH/eval) gets metrics.json ({set: {metric: value}}) and one
TREC run file a set (`<set>.trec`: `qid Q0 docid rank score samtone_jax`).
"""

import json
import logging
import pathlib
import sys
from typing import Optional, Sequence

import flax.linen as nn
import gin
import jax
import orbax.checkpoint as ocp
import seqio

from samtone_jax import dual_encoder, partitioning, pretrained, retrieval, train
from samtone_jax.tasks import eval_sets as eval_sets_lib

_LOG = logging.getLogger("samtone_jax.evaluate")


def load_params(model: dual_encoder.DualEncoder, checkpoint_path: str, lengths: dict,
                mesh: Optional[jax.sharding.Mesh] = None) -> dict:
  """The model's parameters from a training MODEL_DIR, a `checkpoints/<step>` folder, or a
  pretrained Hugging Face / sentence-transformers folder.

  A checkpoint's parameters (only those of its TrainState are read) are replicated over
  `mesh` (default: all devices), whatever devices and mesh saved them.
  """
  path = pathlib.Path(checkpoint_path).absolute()
  if (path / "modules.json").exists() or (path / "config.json").exists():
    config, tower, kernel = pretrained.load_initial_checkpoint(path)
    pretrained.check_compatible(config, model.config, f"CHECKPOINT_PATH={checkpoint_path!r}")
    ids = jax.numpy.zeros((1, lengths["queries"]), jax.numpy.int32)
    params = nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]
    return pretrained.with_pretrained(jax.device_get(params), model.architecture, tower, kernel)
  step = int(path.name) if path.name.isdigit() and path.parent.name == "checkpoints" else None
  directory = path.parent if step is not None else path / "checkpoints"
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"CHECKPOINT_PATH={checkpoint_path!r}: no checkpoint in"
                            f" {directory} and no pretrained model folder.")
  _LOG.info("Parameters of step %d from %s.", step, path)
  mesh = partitioning.create_mesh() if mesh is None else mesh
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  target = {"params": jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      manager.item_metadata(step)["params"])}
  return manager.restore(step, args=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))["params"]


def write_trec_run(path: pathlib.Path, run: dict[str, dict[str, float]]) -> None:
  """TREC's run format: `qid Q0 docid rank score tag`, best first."""
  with open(path, "w", encoding="utf-8") as f:
    for qid, scores in run.items():
      for rank, (doc, score) in enumerate(
          sorted(scores.items(), key=lambda kv: -kv[1]), start=1):
        f.write(f"{qid} Q0 {doc} {rank} {score:.6f} samtone_jax\n")


def evaluate(*, model: dual_encoder.DualEncoder = gin.REQUIRED,
             checkpoint_path: str = gin.REQUIRED, eval_tasks: Sequence[str] = gin.REQUIRED,
             task_feature_lengths: dict = gin.REQUIRED, output_dir: Optional[str] = None,
             mixture_or_task_name: Optional[str] = None, vocabulary=None, k: int = 1000,
             num_partitions: int = 1, batch_size: int = 256) -> dict[str, dict[str, float]]:
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
  """
  if vocabulary is None:
    if mixture_or_task_name is None:
      raise ValueError("set VOCABULARY or MIXTURE_OR_TASK_NAME (whose vocabulary to use).")
    vocabulary = seqio.get_mixture_or_task(mixture_or_task_name).output_features[
        "queries"].vocabulary
  sets = {name: eval_sets_lib.get(name) for name in eval_tasks}  # unknown names fail now
  mesh = partitioning.create_mesh(num_partitions)
  params = load_params(model, checkpoint_path, task_feature_lengths, mesh)
  encode = lambda method: lambda params, ids: model.apply({"params": params}, ids,
                                                          method=method)
  output_dir = pathlib.Path(output_dir or pathlib.Path(checkpoint_path) / "eval")
  output_dir.mkdir(parents=True, exist_ok=True)
  results = {}
  for name, eval_set in sets.items():
    found, run = retrieval.evaluate(encode(model.encode_queries), encode(model.encode_passages),
                                    params, eval_set, vocabulary, task_feature_lengths, mesh,
                                    k=k, batch_size=batch_size)
    results[name] = found
    if jax.process_index() == 0:
      write_trec_run(output_dir / f"{name}.trec", run)
    _LOG.info("%s: %s", name, json.dumps({m: round(v, 4) for m, v in found.items()}))
  if jax.process_index() == 0:
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True))
  return results


def main(argv: Optional[Sequence[str]] = None) -> None:
  train.setup_logging()
  args = train.parse_flags(sys.argv[1:] if argv is None else argv)
  train.initialize_processes(args)
  train.parse_gin(args.gin_file, args.gin_bindings,
                  [p for p in args.gin_search_paths.split(",") if p])
  gin.get_configurable(evaluate)()


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import evaluate as _evaluate_module  # pylint: disable=g-import-not-at-top
  _evaluate_module.main()
