"""Pretrained weights in: Hugging Face T5 (v1.1 / v1.0) encoders, sentence-transformers GTR,
and dual encoders exported by export.py.

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
- `load_dual_encoder(path)`: a whole dual encoder (SDE in GTR's form, ADE and ADE-SPL as a
  sentence-transformers `Router`), as export.py writes it: the architecture and every
  parameter.

Parameters come back as nested dicts of numpy float32 arrays, shaped like
`nn.unbox(t5.T5Encoder(config).init(...))["params"]`. One table of names (`_hf_names`) maps
them to Hugging Face's T5 tensors both ways: `t5_params_to_hf` and `t5_config_to_hf` are the
inverses that export.py uses.
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


# Our T5Config field -> (Hugging Face config.json field, its default when absent; None: required).
_HF_CONFIG_FIELDS = {
    "vocab_size": ("vocab_size", None), "d_model": ("d_model", None), "d_ff": ("d_ff", None),
    "num_heads": ("num_heads", None), "head_dim": ("d_kv", None),
    "num_layers": ("num_layers", None), "dropout_rate": ("dropout_rate", 0.1),
    "relative_attention_num_buckets": ("relative_attention_num_buckets", 32),
    "relative_attention_max_distance": ("relative_attention_max_distance", 128),
    "layer_norm_epsilon": ("layer_norm_epsilon", 1e-6),
}


def t5_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> t5.T5Config:
  """Our T5Config from a Hugging Face T5 `config.json` dict."""
  projection = config.get("feed_forward_proj", "relu")
  if projection not in _MLP_ACTIVATIONS:
    raise CheckpointError(f"{source}: feed_forward_proj={projection!r} is not supported;"
                          f" expected one of {sorted(_MLP_ACTIVATIONS)}.")
  try:
    fields = {ours: config[theirs] if default is None else config.get(theirs, default)
              for ours, (theirs, default) in _HF_CONFIG_FIELDS.items()}
  except KeyError as e:
    raise CheckpointError(f"{source}: missing field {e.args[0]!r}.") from None
  return t5.T5Config(**fields, mlp_activations=_MLP_ACTIVATIONS[projection])


def t5_config_to_hf(config: t5.T5Config) -> dict[str, Any]:
  """The inverse of `t5_config_from_hf`: the fields of a Hugging Face `T5Config`."""
  projection = {v: k for k, v in _MLP_ACTIVATIONS.items()}.get(tuple(config.mlp_activations))
  if projection is None:
    raise ValueError(f"T5Config.mlp_activations={config.mlp_activations!r} has no Hugging Face"
                     f" feed_forward_proj; expected one of {sorted(_MLP_ACTIVATIONS.values())}.")
  return {**{theirs: getattr(config, ours) for ours, (theirs, _) in _HF_CONFIG_FIELDS.items()},
          "feed_forward_proj": projection}


def _hf_names(config: t5.T5Config, embedding: str = "shared.weight"
              ) -> dict[tuple[str, ...], tuple[str, bool]]:
  """The one table between our parameter paths and Hugging Face T5 tensor names, used both
  ways: our path -> (HF name, whether the HF tensor is our array transposed)."""
  names = {}
  names[("token_embedding",)] = (embedding, False)
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
  return names


def t5_params_from_hf(state: Mapping[str, np.ndarray], config: t5.T5Config,
                      source: str = "checkpoint") -> Params:
  """Maps Hugging Face T5 encoder tensors onto `t5.T5Encoder`'s parameter tree.

  Raises:
    CheckpointError: naming every encoder tensor that is missing, unexpected or misshapen.
  """
  names = _hf_names(config, "shared.weight" if "shared.weight" in state
                    else "encoder.embed_tokens.weight")
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


def t5_params_to_hf(params: Params, config: t5.T5Config) -> dict[str, np.ndarray]:
  """The inverse of `t5_params_from_hf`: a `t5.T5Encoder` tree -> the state dict of Hugging
  Face's `T5EncoderModel` (float32, the embedding under both of its tied names)."""
  names = _hf_names(config)
  flat = traverse_util.flatten_dict(params)
  if set(flat) != set(names):
    raise ValueError(f"params do not match a T5 encoder with {config.num_layers} layers and"
                     f" mlp_activations={config.mlp_activations}: they differ in"
                     f" {sorted(set(flat) ^ set(names))[:6]}.")
  state = {}
  for path, (theirs, transpose) in names.items():
    value = np.asarray(flat[path], np.float32)
    state[theirs] = np.ascontiguousarray(value.T if transpose else value)
  state["encoder.embed_tokens.weight"] = state["shared.weight"]
  return state


def load_hf_t5_encoder(path: str | pathlib.Path) -> tuple[t5.T5Config, Params]:
  """Reads a Hugging Face T5 checkpoint folder: (T5Config, encoder params)."""
  path = pathlib.Path(path)
  config = t5_config_from_hf(_read_json(path / "config.json"), str(path / "config.json"))
  return config, t5_params_from_hf(read_state_dict(path), config, str(path))


def _check_mean_pooling(folder: pathlib.Path) -> None:
  """Raises CheckpointError unless a sentence-transformers Pooling folder mean-pools."""
  pooling = _read_json(folder / "config.json")
  if "pooling_mode" in pooling:  # sentence-transformers 6: "pooling_mode": "mean"
    modes = [pooling["pooling_mode"]]
  else:  # earlier releases: one boolean per mode
    modes = [k[len("pooling_mode_"):] for k, v in sorted(pooling.items())
             if k.startswith("pooling_mode_") and v is True]
  if modes not in (["mean"], ["mean_tokens"]):
    raise CheckpointError(f"{folder / 'config.json'}: our towers mean-pool; the folder asks for"
                          f" pooling {modes}.")


def _read_dense_kernel(folder: pathlib.Path, d_model: int) -> np.ndarray:
  """A sentence-transformers Dense folder as our projection kernel [d_model, out]."""
  dense = _read_json(folder / "config.json")
  activation = dense.get("activation_function", "torch.nn.modules.linear.Identity")
  if (dense.get("bias", True) or not activation.endswith("Identity")
      or dense.get("use_residual", False)):
    raise CheckpointError(
        f"{folder / 'config.json'}: our projection is linear without bias; the folder has"
        f" bias={dense.get('bias', True)}, activation_function={activation!r},"
        f" use_residual={dense.get('use_residual', False)}.")
  kernel = np.asarray(read_state_dict(folder)["linear.weight"], np.float32).T  # [in, out]
  if kernel.shape[0] != d_model:
    raise CheckpointError(f"{folder}: Dense takes {kernel.shape[0]} features, the encoder gives"
                          f" {d_model}.")
  return kernel


def _module_kinds(path: pathlib.Path) -> tuple[list[str], dict[str, pathlib.Path]]:
  """A sentence-transformers folder's modules.json: class names in order, and their folders."""
  modules = _read_json(path / "modules.json")
  kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
  return kinds, {kind: path / m["path"] for kind, m in zip(kinds, modules)}


def load_sentence_transformers(path: str | pathlib.Path
                               ) -> tuple[t5.T5Config, Params, Optional[np.ndarray]]:
  """Reads a sentence-transformers T5 folder (GTR): (T5Config, encoder params, kernel).

  The kernel is the `Dense` module's weight as our projection kernel [d_model, out], or None
  when the folder has no Dense module. The modules must be a T5 Transformer, mean pooling,
  optionally a bias-free identity-activation Dense, and optionally Normalize (our dual
  encoder always normalises).
  """
  path = pathlib.Path(path)
  kinds, where = _module_kinds(path)
  if kinds[:2] != ["Transformer", "Pooling"] or not set(kinds[2:]) <= {"Dense", "Normalize"}:
    hint = " (an asymmetric model: read it with load_dual_encoder)" if "Router" in kinds else ""
    raise CheckpointError(f"{path / 'modules.json'}: expected Transformer, Pooling, [Dense],"
                          f" [Normalize]; got {kinds}{hint}.")
  _check_mean_pooling(where["Pooling"])
  config, params = load_hf_t5_encoder(where["Transformer"])
  kernel = _read_dense_kernel(where["Dense"], config.d_model) if "Dense" in where else None
  return config, params, kernel


# The routes of an asymmetric sentence-transformers model (Router.for_query_document), by the
# dual encoder's side they hold.
ROUTES = {"query": "query", "passage": "document"}


def load_dual_encoder(path: str | pathlib.Path) -> tuple[t5.T5Config, str, Params]:
  """Reads a whole dual encoder from a sentence-transformers folder (as export.py writes
  them): (T5Config, architecture, DualEncoder params).

  - Transformer, Pooling, Dense, [Normalize] (GTR's form; an exported SDE): "sde".
  - Router, [Normalize], the Router's "query" and "document" routes each a T5 Transformer,
    mean Pooling and a Dense: "ade_spl" when both routes hold the same Dense module, "ade"
    when each has its own.
  """
  path = pathlib.Path(path)
  kinds, where = _module_kinds(path)
  if kinds[0] != "Router":
    config, tower, kernel = load_sentence_transformers(path)
    if kernel is None:
      raise CheckpointError(f"{path / 'modules.json'}: no Dense module, so no projection of a"
                            " dual encoder.")
    return config, "sde", {"tower": tower, "projection": {"kernel": kernel}}
  if kinds not in (["Router"], ["Router", "Normalize"]):
    raise CheckpointError(f"{path / 'modules.json'}: expected Router, [Normalize]; got {kinds}.")
  router = _read_json(where["Router"] / "router_config.json")
  routes = {}
  for side, route in ROUTES.items():
    ids = router["structure"].get(route, [])
    route_kinds = [router["types"][i].rsplit(".", 1)[-1] for i in ids]
    if route_kinds != ["Transformer", "Pooling", "Dense"]:
      raise CheckpointError(f"{where['Router'] / 'router_config.json'}: route {route!r} should be"
                            f" Transformer, Pooling, Dense; it is {route_kinds}.")
    routes[side] = [where["Router"] / i for i in ids]
  shared = routes["query"][2] == routes["passage"][2]  # ADE-SPL: one Dense in both routes
  configs, params = {}, {}
  for side, (transformer, pooling, dense) in routes.items():
    _check_mean_pooling(pooling)
    configs[side], params[f"{side}_tower"] = load_hf_t5_encoder(transformer)
    kernel = _read_dense_kernel(dense, configs[side].d_model)
    params["projection" if shared else f"{side}_projection"] = {"kernel": kernel}
  differences = [name for name in ARCHITECTURE_FIELDS
                 if getattr(configs["query"], name) != getattr(configs["passage"], name)]
  if differences:
    raise CheckpointError(f"{where['Router']}: the query and document towers differ in"
                          f" {differences}; a dual encoder's towers share one T5Config.")
  return configs["query"], "ade_spl" if shared else "ade", params


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

