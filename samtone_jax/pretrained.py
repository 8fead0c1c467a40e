"""Pretrained weights in: Hugging Face T5 (v1.1 / v1.0) encoders and sentence-transformers GTR.

- `load_hf_t5_encoder(path)`: a Hugging Face T5 directory as downloaded (`config.json` with
  `model.safetensors`, `pytorch_model.bin`, or their sharded `*.index.json` forms), e.g.
  google/t5-v1_1-base. Encoder-decoder checkpoints are fine: the decoder and LM head are
  left out.
- `load_sentence_transformers(path)`: a sentence-transformers folder of a T5 encoder, mean
  pooling, a bias-free `Dense` and `Normalize`, as GTR is published
  (sentence-transformers/gtr-t5-base): the encoder and the projection kernel.
- `load_initial_checkpoint(path)`: either of the two, by what the folder holds; the gin macro
  `INITIAL_CHECKPOINT_PATH` names it.
- `with_pretrained(params, architecture, tower, projection)`: puts the loaded weights into a
  dual encoder's parameter tree: every tower gets the same encoder; projections get the
  loaded kernel or keep their fresh initialisation.

Parameters come back as nested dicts of numpy float32 arrays, shaped like
`nn.unbox(t5.T5Encoder(config).init(...))["params"]`.
"""

import json
import pathlib
from typing import Any, Mapping, Optional

import numpy as np
from flax import traverse_util

from samtone_jax import t5

Params = dict[str, Any]

_MLP_ACTIVATIONS = {"gated-gelu": ("gelu", "linear"), "relu": ("relu",)}
# Tensors of an encoder-decoder checkpoint that an encoder does not use.
_NOT_ENCODER = ("decoder.", "lm_head.")


class CheckpointError(ValueError):
  """A checkpoint folder that cannot be read as the model it claims to be."""


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise CheckpointError(f"{path}: missing.") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e}).") from None


def _load_weight_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return load_file(str(path))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise CheckpointError(f"{path}: reading PyTorch .bin weights needs torch installed"
                          " (or convert the folder to model.safetensors).") from None
  state = torch.load(str(path), map_location="cpu", weights_only=True)
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items()}


def read_state_dict(folder: str | pathlib.Path, stem: str = "model") -> dict[str, np.ndarray]:
  """Tensors of a Hugging Face weights folder: name -> numpy array.

  Looks for `{stem}.safetensors`, then `pytorch_{stem}.bin`, each possibly sharded with an
  `.index.json` (the form of the large T5 checkpoints).
  """
  folder = pathlib.Path(folder)
  for name in (f"{stem}.safetensors", f"pytorch_{stem}.bin"):
    if (folder / name).exists():
      return _load_weight_file(folder / name)
    index = folder / f"{name}.index.json"
    if index.exists():
      shards = sorted(set(_read_json(index)["weight_map"].values()))
      state = {}
      for shard in shards:
        state.update(_load_weight_file(folder / shard))
      return state
  raise CheckpointError(
      f"{folder}: no weights found (looked for {stem}.safetensors, pytorch_{stem}.bin and"
      " their .index.json forms).")


def t5_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> t5.T5Config:
  """Our T5Config from a Hugging Face T5 `config.json` dict."""
  projection = config.get("feed_forward_proj", "relu")
  if projection not in _MLP_ACTIVATIONS:
    raise CheckpointError(f"{source}: feed_forward_proj={projection!r} is not supported;"
                          f" expected one of {sorted(_MLP_ACTIVATIONS)}.")
  try:
    return t5.T5Config(
        vocab_size=config["vocab_size"], d_model=config["d_model"], d_ff=config["d_ff"],
        num_heads=config["num_heads"], head_dim=config["d_kv"],
        num_layers=config["num_layers"], dropout_rate=config.get("dropout_rate", 0.1),
        mlp_activations=_MLP_ACTIVATIONS[projection],
        relative_attention_num_buckets=config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6))
  except KeyError as e:
    raise CheckpointError(f"{source}: missing field {e.args[0]!r}.") from None


def t5_params_from_hf(state: Mapping[str, np.ndarray], config: t5.T5Config,
                      source: str = "checkpoint") -> Params:
  """Maps Hugging Face T5 encoder tensors onto `t5.T5Encoder`'s parameter tree.

  Raises:
    CheckpointError: naming every encoder tensor that is missing, unexpected or misshapen.
  """
  names = {}  # our path -> (HF name, transpose)
  names[("token_embedding",)] = (
      "shared.weight" if "shared.weight" in state else "encoder.embed_tokens.weight", False)
  names[("relpos_bias", "rel_embedding")] = (
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
  names[("encoder_norm", "scale")] = ("encoder.final_layer_norm.weight", False)
  mlp_in = (["wi"] if len(config.mlp_activations) == 1
            else [f"wi_{i}" for i in range(len(config.mlp_activations))])
  for i in range(config.num_layers):
    block, layer = f"encoder.block.{i}.layer.", f"layers_{i}"
    names[(layer, "pre_attention_layer_norm", "scale")] = (block + "0.layer_norm.weight", False)
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      names[(layer, "attention", ours, "kernel")] = (
          f"{block}0.SelfAttention.{theirs}.weight", True)
    names[(layer, "pre_mlp_layer_norm", "scale")] = (block + "1.layer_norm.weight", False)
    for name in mlp_in + ["wo"]:
      names[(layer, "mlp", name, "kernel")] = (f"{block}1.DenseReluDense.{name}.weight", True)

  used = {theirs for theirs, _ in names.values()} | {"shared.weight",
                                                     "encoder.embed_tokens.weight"}
  missing = sorted(theirs for theirs, _ in names.values() if theirs not in state)
  unexpected = sorted(k for k in state if k not in used and not k.startswith(_NOT_ENCODER))
  if missing or unexpected:
    raise CheckpointError(
        f"{source}: does not match a T5 encoder with {config.num_layers} layers and"
        f" mlp_activations={config.mlp_activations}: missing tensors {missing[:10]}"
        f"{' ...' if len(missing) > 10 else ''}; unexpected tensors {unexpected[:10]}"
        f"{' ...' if len(unexpected) > 10 else ''}.")

  expected_shapes = t5.param_shapes(config)
  params: Params = {}
  for path, (theirs, transpose) in names.items():
    value = np.asarray(state[theirs], dtype=np.float32)
    value = value.T if transpose else value
    if value.shape != expected_shapes[path]:
      raise CheckpointError(f"{source}: tensor {theirs} has shape {list(state[theirs].shape)},"
                            f" expected {list(expected_shapes[path])} (transposed: {transpose}).")
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return params


def load_hf_t5_encoder(path: str | pathlib.Path) -> tuple[t5.T5Config, Params]:
  """Reads a Hugging Face T5 checkpoint folder: (T5Config, encoder params)."""
  path = pathlib.Path(path)
  config = t5_config_from_hf(_read_json(path / "config.json"), str(path / "config.json"))
  return config, t5_params_from_hf(read_state_dict(path), config, str(path))


def load_sentence_transformers(path: str | pathlib.Path
                               ) -> tuple[t5.T5Config, Params, Optional[np.ndarray]]:
  """Reads a sentence-transformers T5 folder (GTR): (T5Config, encoder params, kernel).

  The kernel is the `Dense` module's weight as our projection kernel [d_model, out], or None
  when the folder has no Dense module. The modules must be a T5 Transformer, mean pooling,
  optionally a bias-free identity-activation Dense, and optionally Normalize (our dual
  encoder always normalises).
  """
  path = pathlib.Path(path)
  modules = _read_json(path / "modules.json")
  kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
  where = {kind: path / m["path"] for kind, m in zip(kinds, modules)}
  if kinds[:2] != ["Transformer", "Pooling"] or not set(kinds[2:]) <= {"Dense", "Normalize"}:
    raise CheckpointError(f"{path / 'modules.json'}: expected Transformer, Pooling, [Dense],"
                          f" [Normalize]; got {kinds}.")
  pooling = _read_json(where["Pooling"] / "config.json")
  if "pooling_mode" in pooling:  # sentence-transformers 6: "pooling_mode": "mean"
    modes = [pooling["pooling_mode"]]
  else:  # earlier releases: one boolean per mode
    modes = [k[len("pooling_mode_"):] for k, v in sorted(pooling.items())
             if k.startswith("pooling_mode_") and v is True]
  if modes not in (["mean"], ["mean_tokens"]):
    raise CheckpointError(f"{where['Pooling'] / 'config.json'}: our towers mean-pool; the"
                          f" folder asks for pooling {modes}.")
  config, params = load_hf_t5_encoder(where["Transformer"])
  kernel = None
  if "Dense" in where:
    dense = _read_json(where["Dense"] / "config.json")
    activation = dense.get("activation_function", "torch.nn.modules.linear.Identity")
    if (dense.get("bias", True) or not activation.endswith("Identity")
        or dense.get("use_residual", False)):
      raise CheckpointError(
          f"{where['Dense'] / 'config.json'}: our projection is linear without bias; the"
          f" folder has bias={dense.get('bias', True)}, activation_function={activation!r},"
          f" use_residual={dense.get('use_residual', False)}.")
    weight = read_state_dict(where["Dense"])["linear.weight"]  # [out, in]
    kernel = np.asarray(weight, np.float32).T
    if kernel.shape[0] != config.d_model:
      raise CheckpointError(f"{where['Dense']}: Dense takes {kernel.shape[0]} features, the"
                            f" encoder gives {config.d_model}.")
  return config, params, kernel


def load_initial_checkpoint(path: str | pathlib.Path
                            ) -> tuple[t5.T5Config, Params, Optional[np.ndarray]]:
  """A sentence-transformers folder (has modules.json) or a Hugging Face T5 folder:
  (T5Config, encoder params, projection kernel or None)."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise CheckpointError(f"INITIAL_CHECKPOINT_PATH={str(path)!r} is not a folder.")
  if (path / "modules.json").exists():
    return load_sentence_transformers(path)
  return (*load_hf_t5_encoder(path), None)


ARCHITECTURE_FIELDS = ("vocab_size", "d_model", "d_ff", "num_heads", "head_dim", "num_layers",
                       "mlp_activations", "relative_attention_num_buckets",
                       "relative_attention_max_distance", "layer_norm_epsilon")


def check_compatible(loaded: t5.T5Config, configured: t5.T5Config, source: str) -> None:
  """Raises CheckpointError naming every architecture field in which the checkpoint's
  config differs from the model's (gin's); dropout, dtypes and remat may differ."""
  differences = [f"{name}: checkpoint {getattr(loaded, name)!r}, model"
                 f" {getattr(configured, name)!r}" for name in ARCHITECTURE_FIELDS
                 if getattr(loaded, name) != getattr(configured, name)]
  if differences:
    raise CheckpointError(f"{source} does not fit the configured T5Config (set the model's"
                          f" gin file to the checkpoint's sizes): {'; '.join(differences)}.")


def with_pretrained(params: Params, architecture: str, tower: Params,
                    projection: Optional[np.ndarray] = None) -> Params:
  """A dual encoder's params with every tower set to `tower` (and projections to
  `projection` when given); other entries stay as they are.

  Raises:
    CheckpointError: when a loaded array's shape differs from the model's.
  """
  towers = ["tower"] if architecture == "sde" else ["query_tower", "passage_tower"]
  projections = {"sde": ["projection"], "ade_spl": ["projection"],
                 "ade": ["query_projection", "passage_projection"]}[architecture]
  out = dict(params)

  def checked(name, new, old):
    new_shapes = {k: np.shape(v) for k, v in traverse_util.flatten_dict(new).items()}
    old_shapes = {k: np.shape(v) for k, v in traverse_util.flatten_dict(old).items()}
    if new_shapes != old_shapes:
      diff = sorted(set(new_shapes.items()) ^ set(old_shapes.items()))[:6]
      raise CheckpointError(f"pretrained {name} does not fit the model: {diff}")
    return new

  for name in towers:
    out[name] = checked(name, tower, params[name])
  if projection is not None:
    for name in projections:
      out[name] = checked(name, {"kernel": projection}, params[name])
  return out

