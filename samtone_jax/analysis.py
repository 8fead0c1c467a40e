r"""The paper's embedding-space figures, as PNG files and numbers.

  python -m samtone_jax.analysis --checkpoint=/tmp/softmax --checkpoint=/tmp/samtone \
      --task=stdlib_code_search_test --out=/tmp/figures

Each --checkpoint is a training MODEL_DIR (its newest checkpoint) or one of its
`checkpoints/<step>` folders; the run's config.gin gives the model. Up to two are drawn over
each other, labelled by --label or the folder name. For the evaluation set --task:
- figure1_tsne.png (the paper's Figure 1): a t-SNE map of the embeddings of a sample of
  ground-truth (query, passage) pairs, coloured by tower;
- figure5_top1_similarity.png (Figure 5): the cosine similarity of each query to its top-1
  retrieved passage of the whole corpus;
- figure6_qq_over_qp.png (Figure 6): sim(q_i, q_j) / sim(q_i, p_j) for random i != j;
- analysis.json: those distributions as numbers (means, quantiles), and the towers'
  alignment: the mean distance of a query to its positive against the mean distance to its
  nearest other query, and the distance between the towers' centroids.
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

import argparse
import json
import pathlib
from typing import Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top,wrong-import-position

from samtone_jax import atomic, checkpoints, embedder, eval_sets, launch  # pylint: disable=g-import-not-at-top,wrong-import-position

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def embeddings(checkpoint: str, eval_set, sample: int, seed: int) -> dict[str, np.ndarray]:
  """Embeds an evaluation set with a training run's checkpoint (MODEL_DIR or
  `checkpoints/<step>`).

  Returns:
    {"queries": [Q, E] (every judged query), "corpus": [N, E], "pair_queries",
    "pair_passages": [S, E] (a sample of ground-truth pairs)}.
  """
  run, step = checkpoints.resolve_checkpoint(checkpoint, "--checkpoint", need_config=True)
  model, settings = launch.read_run([str(run.config)],
                                    ["MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS"])
  embed = embedder.Embedder.from_checkpoint(
      model, run.checkpoint(step), settings["TASK_FEATURE_LENGTHS"],
      vocabulary=settings["VOCABULARY"],
      name="--checkpoint")
  query_ids = list(eval_set.qrels)
  pairs = [(q, d) for q in query_ids for d, rel in eval_set.qrels[q].items() if rel > 0]
  rng = np.random.default_rng(seed)
  pairs = [pairs[i] for i in rng.permutation(len(pairs))[:sample]]
  return {"queries": embed.queries([eval_set.queries[q] for q in query_ids]),
          "corpus": embed.passages(list(eval_set.corpus.values())),
          "pair_queries": embed.queries([eval_set.queries[q] for q, _ in pairs]),
          "pair_passages": embed.passages([eval_set.corpus[d] for _, d in pairs])}


def summarise(values: np.ndarray) -> dict[str, float]:
  return {"mean": float(np.mean(values)),
          **{f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}}


def statistics(emb: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
  """The figures' distributions: top-1 similarities [Q], q-q / q-p ratios [S], and the
  alignment distances [S] (to the positive, to the nearest other query)."""
  top1 = np.max(emb["queries"] @ emb["corpus"].T, axis=1)
  q, p = emb["pair_queries"], emb["pair_passages"]
  rng = np.random.default_rng(seed)
  i = rng.integers(0, len(q), 4 * len(q))
  j = rng.integers(0, len(q), 4 * len(q))
  keep = i != j
  qq, qp = np.sum(q[i] * q[j], -1)[keep], np.sum(q[i] * p[j], -1)[keep]
  ratios = qq / np.where(np.abs(qp) < 1e-6, np.sign(qp + 1e-12) * 1e-6, qp)
  distances = np.linalg.norm(q[:, None] - q[None], axis=-1)
  np.fill_diagonal(distances, np.inf)
  return {"top1": top1, "ratios": ratios,
          "to_positive": np.linalg.norm(q - p, axis=-1),
          "to_nearest_query": distances.min(axis=1),
          "centroids": np.array([np.linalg.norm(q.mean(0) - p.mean(0))])}


def draw(results: dict[str, dict], out: pathlib.Path, seed: int) -> None:
  """Writes the three PNG files, one curve or panel per checkpoint."""
  fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5), squeeze=False)
  for ax, (label, (emb, _)) in zip(axes[0], results.items()):
    points = np.concatenate([emb["pair_queries"], emb["pair_passages"]])
    xy = TSNE(n_components=2, perplexity=min(30, len(points) // 4), init="pca",
              random_state=seed).fit_transform(points)
    n = len(emb["pair_queries"])
    ax.scatter(*xy[:n].T, s=6, c="tab:blue", label="query tower")
    ax.scatter(*xy[n:].T, s=6, c="tab:orange", label="passage tower")
    ax.set_title(f"t-SNE of both towers: {label}")
    ax.legend()
  fig.savefig(out / "figure1_tsne.png", dpi=120, bbox_inches="tight")
  plt.close(fig)
  for key, name, xlabel in (
      ("top1", "figure5_top1_similarity.png", "cosine similarity of query and top-1 passage"),
      ("ratios", "figure6_qq_over_qp.png", "sim(q_i, q_j) / sim(q_i, p_j), random i != j")):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Shared bins over the central 98% of all checkpoints' values (the ratio has long tails).
    pooled = np.concatenate([stats[key] for _, stats in results.values()])
    low, high = np.quantile(pooled, (0.01, 0.99))
    for label, (_, stats) in results.items():
      ax.hist(np.clip(stats[key], low, high), bins=np.linspace(low, high, 61), alpha=0.5,
              density=True, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    fig.savefig(out / name, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.setup_host()
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", action="append", required=True,
                      help="a training MODEL_DIR or one of its checkpoints/<step>;"
                      " twice to compare two")
  parser.add_argument("--label", action="append", help="a name for each checkpoint")
  parser.add_argument("--task", required=True, help="an evaluation set, e.g. multireqa_squad")
  parser.add_argument("--out", required=True, help="where the PNG and JSON files go")
  parser.add_argument("--sample", type=int, default=500, help="ground-truth pairs drawn")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if len(args.checkpoint) > 2 or (args.label and len(args.label) != len(args.checkpoint)):
    parser.error("one or two --checkpoint, and as many --label if any")
  labels = args.label or [pathlib.Path(c).name for c in args.checkpoint]
  eval_set = eval_sets.get(args.task)
  results = {}
  for label, checkpoint in zip(labels, args.checkpoint):
    emb = embeddings(checkpoint, eval_set, args.sample, args.seed)
    results[label] = (emb, statistics(emb, args.seed))
  out = pathlib.Path(args.out)  # made once the runs are read: a bad run leaves nothing
  out.mkdir(parents=True, exist_ok=True)
  draw(results, out, args.seed)
  summary = {label: {"top1_similarity": summarise(stats["top1"]),
                     "qq_over_qp": summarise(stats["ratios"]),
                     "alignment": {"to_positive": float(stats["to_positive"].mean()),
                                   "to_nearest_query": float(stats["to_nearest_query"].mean()),
                                   "centroid_distance": float(stats["centroids"][0])}}
             for label, (_, stats) in results.items()}
  atomic.write_atomically(out / "analysis.json", json.dumps(summary, indent=2))
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
