"""Tiny Hugging Face T5 and sentence-transformers folders, written as users download them.

Random weights, real formats: `save_pretrained` folders (config.json + model.safetensors),
PyTorch .bin, encoder-decoder checkpoints, and a GTR-style sentence-transformers folder
with a word-level tokenizer (pad 0, EOS 1, UNK 2 as in T5).
"""

import json
import pathlib

import torch
import transformers

TINY = dict(vocab_size=64, d_model=16, d_ff=40, num_heads=2, d_kv=6, num_layers=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=20,
            dropout_rate=0.0, layer_norm_epsilon=1e-6)
WORDS = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(61)]


def hf_config(feed_forward_proj="gated-gelu", **overrides):
  return transformers.T5Config(**{**TINY, "feed_forward_proj": feed_forward_proj, **overrides})


def save_t5_encoder(path, feed_forward_proj="gated-gelu", seed=0, encoder_decoder=False,
                    pytorch_bin=False, **overrides):
  """Writes a random tiny T5 to `path` (TINY, with `overrides` of its config fields);
  returns the PyTorch encoder model (eval mode)."""
  torch.manual_seed(seed)
  config = hf_config(feed_forward_proj, **overrides)
  path = pathlib.Path(path)
  if encoder_decoder:
    model = transformers.T5ForConditionalGeneration(config).eval()
    encoder = model.get_encoder()
  else:
    model = encoder = transformers.T5EncoderModel(config).eval()
  model.save_pretrained(path)
  if pytorch_bin:  # The older download form: pytorch_model.bin instead of safetensors.
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
  return encoder


def save_word_tokenizer(path):
  """A word-level fast tokenizer over WORDS that appends </s>, as T5's does."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)},
                                              unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                     special_tokens=[("</s>", 1)])
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
  fast.save_pretrained(path)


def save_gtr(path, embedding_dim=12, seed=0, feed_forward_proj="relu"):
  """A GTR-style sentence-transformers folder: T5 encoder, mean pooling, Dense, Normalize."""
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  from sentence_transformers.sentence_transformer import modules  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  encoder_dir = path.parent / (path.name + "_encoder")
  save_t5_encoder(encoder_dir, feed_forward_proj=feed_forward_proj, seed=seed)
  save_word_tokenizer(encoder_dir)
  torch.manual_seed(seed + 1)
  word = modules.Transformer(str(encoder_dir))
  pooling = modules.Pooling(TINY["d_model"], pooling_mode="mean")
  dense = modules.Dense(TINY["d_model"], embedding_dim, bias=False,
                        activation_function=torch.nn.Identity())
  model = sentence_transformers.SentenceTransformer(
      modules=[word, pooling, dense, modules.Normalize()], device="cpu")
  model.save(str(path))
  return json.loads((path / "modules.json").read_text())
