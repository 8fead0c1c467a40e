r"""Export a trained dual encoder to sentence-transformers: `python -m samtone_jax.export`.

  python -m samtone_jax.export --checkpoint=/tmp/run --out=/tmp/run/sentence_transformers

--checkpoint is a training MODEL_DIR (its latest checkpoint) or one of its
`checkpoints/<step>` folders. The model, the task (whose vocabulary goes out) and the lengths
come from the run's config.gin; `--gin_file` and `--gin.NAME=VALUE` are applied after it.
--out gets a folder that `sentence_transformers.SentenceTransformer(out)` loads with no extra
code, in PyTorch:

- SDE: the T5 encoder, mean pooling, a bias-free Dense and Normalize (GTR's form);
- ADE and ADE-SPL: sentence-transformers' `Router` with a "query" and a "document" route,
  each a T5 encoder, mean pooling and a Dense (ADE-SPL: one Dense module in both routes),
  then Normalize. `encode_query` takes the query tower, `encode_document` (and `encode`) the
  passage tower.

Each encoder is a Hugging Face `T5EncoderModel` (config.json, model.safetensors) with the
task's SentencePiece vocabulary as a fast tokenizer (tokenizer.json) that appends EOS and
cuts texts to the training lengths, TASK_FEATURE_LENGTHS: "queries" for queries, "passages"
for documents. README.md is a model card: architecture, loss, training data and the run's
metrics.json. `pretrained.load_dual_encoder(out)` reads the folder back into the exported
parameters, exactly.

The tokenizer is built from the SentencePiece model by transformers' own converter
(`SpmConverter.build_tokenizer_from_spm_proto`), which follows the model's normalizer spec,
byte fallback and user-defined pieces; tests/test_export.py checks its ids against seqio's.
One difference remains, as with every Hugging Face T5 tokenizer: a text that literally holds
the name of a control or byte piece (`</s>`, `<pad>`, `<unk>`, `<0x41>`) gets that piece's
id, where SentencePiece spells the characters out.
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

import argparse
import json
import logging
import pathlib
import sys
import tempfile
from typing import Any, Optional, Sequence

import numpy as np
import seqio
import sentence_transformers
from sentence_transformers.sentence_transformer import modules
from sentencepiece import sentencepiece_model_pb2
from tokenizers import processors
import torch
import transformers
from transformers.convert_slow_tokenizer import SpmConverter

from samtone_jax import atomic, checkpoints, dual_encoder, embedder, launch, pretrained, t5

_LOG = logging.getLogger("samtone_jax.export")

# The run's macros that the model card reports (gin_configs/runs/train.gin sets them all).
CARD_MACROS = ("MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "BATCH_SIZE",
               "LEARNING_RATE", "TEMPERATURE", "SAME_TOWER", "BIDIRECTIONAL", "PAIR_ALPHA",
               "NUM_NEGATIVES", "MASK_DUPLICATES", "INITIAL_CHECKPOINT_PATH")
ARCHITECTURE_NAMES = {"sde": ("SDE", "symmetric dual encoder"),
                      "ade": ("ADE", "asymmetric dual encoder"),
                      "ade_spl": ("ADE-SPL", "asymmetric dual encoder, shared projection layer")}


def hf_tokenizer(vocabulary: seqio.SentencePieceVocabulary
                 ) -> transformers.PreTrainedTokenizerFast:
  """A Hugging Face fast tokenizer giving the vocabulary's ids of a text, then EOS."""
  if not isinstance(vocabulary, seqio.SentencePieceVocabulary):
    raise ValueError(f"only a SentencePiece vocabulary can be exported as a tokenizer; the task's"
                     f" is {vocabulary!r}.")
  proto = sentencepiece_model_pb2.ModelProto.FromString(vocabulary.sp_model)
  tokenizer = SpmConverter.build_tokenizer_from_spm_proto(
      proto, [(piece.piece, piece.score) for piece in proto.pieces])
  eos, pad, unk = (proto.pieces[i].piece
                   for i in (vocabulary.eos_id, vocabulary.pad_id, vocabulary.unk_id))
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f"$A {eos}", special_tokens=[(eos, vocabulary.eos_id)])
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos,
                                              pad_token=pad, unk_token=unk)


def _transformer(tower: pretrained.Params, config: t5.T5Config,
                 tokenizer: transformers.PreTrainedTokenizerFast, folder: pathlib.Path,
                 **lengths: int) -> modules.Transformer:
  """One tower as a sentence-transformers Transformer, through a Hugging Face folder."""
  encoder = transformers.T5EncoderModel(
      transformers.T5Config(**pretrained.t5_config_to_hf(config)))
  encoder.load_state_dict({name: torch.tensor(value) for name, value in
                           pretrained.t5_params_to_hf(tower, config).items()})
  encoder.save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  return modules.Transformer(str(folder), **lengths)


def sentence_transformer(model: dual_encoder.DualEncoder, params: pretrained.Params,
                         tokenizer: transformers.PreTrainedTokenizerFast,
                         lengths: dict[str, int], staging: pathlib.Path
                         ) -> sentence_transformers.SentenceTransformer:
  """The dual encoder as a SentenceTransformer on CPU (see the module docstring).

  Args:
    model: the DualEncoder.
    params: its parameters (the tree of `model.init(...)["params"]`).
    tokenizer: from `hf_tokenizer`.
    lengths: {"queries": Lq, "passages": Lp}, the tokens (EOS included) a text is cut to.
    staging: an empty folder for the towers' Hugging Face files, needed until saved.
  """
  config = model.config
  pooling = modules.Pooling(config.d_model, pooling_mode="mean")

  def dense(projection):  # our kernel [d_model, E] is Dense's weight [E, d_model] transposed
    return modules.Dense(config.d_model, model.embedding_dim, bias=False,
                         activation_function=torch.nn.Identity(),
                         init_weight=torch.tensor(np.asarray(projection["kernel"], np.float32).T))

  if model.architecture == "sde":
    encoder = _transformer(params["tower"], config, tokenizer, staging,
                           max_seq_length=lengths["passages"], query_length=lengths["queries"],
                           document_length=lengths["passages"])
    return sentence_transformers.SentenceTransformer(
        modules=[encoder, pooling, dense(params["projection"]), modules.Normalize()],
        device="cpu", similarity_fn_name="cosine")
  if model.architecture == "ade_spl":  # one Dense module: Router saves it once, in both routes
    projections = dict.fromkeys(("query", "passage"), dense(params["projection"]))
  else:
    projections = {side: dense(params[f"{side}_projection"]) for side in ("query", "passage")}
  routes = {}
  for side, length in (("query", lengths["queries"]), ("passage", lengths["passages"])):
    encoder = _transformer(params[f"{side}_tower"], config, tokenizer, staging / side,
                           max_seq_length=length)
    routes[side] = [encoder, pooling, projections[side]]
  router = modules.Router.for_query_document(routes["query"], routes["passage"])
  return sentence_transformers.SentenceTransformer(
      modules=[router, modules.Normalize()], device="cpu", similarity_fn_name="cosine")


def _loss_lines(s: dict[str, Any]) -> list[str]:
  if s["PAIR_ALPHA"] > 0:
    name = (f"PAIR (Ren et al., 2021), (1 - a) L_qp + a L_P with a = {s['PAIR_ALPHA']}, in-batch"
            " negatives")
  elif s["SAME_TOWER"] == "none":
    name = "in-batch softmax"
  else:
    name = (f"SamToNe (Moiseev et al., 2023): same-tower negatives on the {s['SAME_TOWER']}"
            f" side{'s' if s['SAME_TOWER'] == 'both' else ''}, besides in-batch negatives")
  return [f"- {name}",
          f"- temperature {s['TEMPERATURE']}, "
          + ("bidirectional (L_qp + L_pq)" if s["BIDIRECTIONAL"] else "query -> passage only"),
          f"- hard negatives per query: {s['NUM_NEGATIVES']}; duplicate masking:"
          f" {'on' if s['MASK_DUPLICATES'] else 'off'}"]


def model_card(model: dual_encoder.DualEncoder, settings: dict[str, Any], step: int,
               metrics: Optional[dict[str, float]]) -> str:
  """README.md of an exported folder: architecture, loss, training data, evaluation.

  Args:
    model: the DualEncoder.
    settings: the run's CARD_MACROS, by name.
    step: the exported checkpoint's step.
    metrics: the run's metrics.json, or None when it has none.
  """
  c, s = model.config, settings
  short, long = ARCHITECTURE_NAMES[model.architecture]
  lengths = s["TASK_FEATURE_LENGTHS"]
  towers = ("one T5 encoder for queries and documents" if model.architecture == "sde" else
            "a T5 encoder for queries and one for documents")
  projections = {"sde": "one projection", "ade": "a projection for each side",
                 "ade_spl": "one projection shared by both sides"}[model.architecture]
  if metrics is None:
    evaluation = ["The run has no metrics.json."]
  elif metrics.get("step") != step:
    evaluation = [f"The run's metrics.json is of step {metrics.get('step')}, not of this"
                  f" checkpoint (step {step}): export the final checkpoint to report it."]
  else:
    evaluation = [f"From the run's metrics.json (step {step}): `retrieval/<set>/` ranks a whole"
                  " evaluation set's corpus; `eval/` is in-batch, on the validation split.", "",
                  "| metric | value |", "|---|---|"]
    reported = sorted((name for name in metrics if name.startswith(("retrieval/", "eval/"))),
                      key=lambda name: (name.startswith("eval/"), name))
    evaluation += [f"| {name} | {metrics[name]:.4f} |" for name in reported]
  lines = [
      "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
      "tags: [sentence-transformers, feature-extraction, sentence-similarity, samtone]", "---",
      "", f"# {short} retriever trained with samtone-jax", "",
      "A dual-encoder retriever trained in JAX/Flax with samtone-jax, exported to"
      " sentence-transformers.",
      "", "## Architecture", "",
      f"- {short} ({long}): {towers}, mean pooling over the tokens,"
      f" {projections} (linear, no bias) to {model.embedding_dim} dimensions, L2"
      " normalisation; similarity: cosine.",
      f"- T5 encoder: d_model {c.d_model}, d_ff {c.d_ff}, heads {c.num_heads} x {c.head_dim},"
      f" layers {c.num_layers}, MLP {'-'.join(c.mlp_activations)}, vocabulary {c.vocab_size},"
      f" relative position buckets {c.relative_attention_num_buckets} (max distance"
      f" {c.relative_attention_max_distance}).",
      f"- Texts are cut to {lengths['queries']} tokens for queries and {lengths['passages']}"
      " for documents, EOS included, as in training.",
      "", "## Loss", "", *_loss_lines(s),
      "", "## Training data", "",
      f"- SeqIO task or mixture `{s['MIXTURE_OR_TASK_NAME']}`, {s['TRAIN_STEPS']} steps of"
      f" global batch {s['BATCH_SIZE']}, learning rate {s['LEARNING_RATE']}; exported at step"
      f" {step}.",
      f"- Initial checkpoint: {s['INITIAL_CHECKPOINT_PATH'] or 'none (trained from scratch)'}.",
      "", "## Evaluation", "", *evaluation,
      "", "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer",
      "", "model = SentenceTransformer(\"path/to/this/folder\")",
      "queries = model.encode_query([\"how do I parse a date?\"])",
      "documents = model.encode_document([\"def parse_date(text): ...\"])",
      "print(model.similarity(queries, documents))", "```", ""]
  return "\n".join(lines)


def export(checkpoint: str, out: str, gin_flags: Sequence[str] = ()) -> pathlib.Path:
  """Writes a training run's checkpoint to `out` as a sentence-transformers folder.

  Args:
    checkpoint: a training MODEL_DIR (its latest checkpoint) or a `checkpoints/<step>` folder.
    out: the folder to write.
    gin_flags: `--gin_file=...`, `--gin.NAME=VALUE`, `--gin_search_paths=...`, as train's,
      applied after the run's config.gin.

  Returns:
    The folder written.
  """
  run, step = checkpoints.resolve_checkpoint(checkpoint, "--checkpoint", need_config=True)
  flags = launch.parse_flags([f"--gin_file={run.config}", *gin_flags])
  model, settings = launch.read_run(flags.gin_file, CARD_MACROS, flags.gin_bindings,
                                    flags.search_paths)
  lengths = settings["TASK_FEATURE_LENGTHS"]
  embed = embedder.Embedder.from_checkpoint(
      model, run.checkpoint(step), lengths,
      vocabulary=settings["VOCABULARY"], name="--checkpoint")
  out = pathlib.Path(out)
  with tempfile.TemporaryDirectory() as staging:
    sentence_transformer(model, embed.params, hf_tokenizer(embed.vocabulary), lengths,
                         pathlib.Path(staging)).save(str(out), create_model_card=False)
  metrics = json.loads(run.metrics.read_text()) if run.metrics.exists() else None
  atomic.write_atomically(out / "README.md", model_card(model, settings, step, metrics))
  _LOG.info("Step %d of %s exported to %s.", step, run.path, out)
  return out


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.setup_logging()
  launch.setup_host()
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      epilog="Also --gin_file, --gin.NAME=VALUE and --gin_search_paths, as for training.")
  parser.add_argument("--checkpoint", required=True,
                      help="a training MODEL_DIR, or one of its checkpoints/<step> folders")
  parser.add_argument("--out", required=True, help="the sentence-transformers folder to write")
  args, gin_flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  export(args.checkpoint, args.out, gin_flags)


if __name__ == "__main__":
  main()
