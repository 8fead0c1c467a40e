"""The T5 encoder (v1.1, and v1.0 for GTR) in Flax linen, with logical axis names.

T5 v1.1: RMS layer norm (a scale, no bias, no mean), attention without 1/sqrt(d) scaling
(folded into the query initialiser), a bucketed bidirectional relative position bias that
all layers share, a gated-GELU MLP (tanh GELU, as T5X and Hugging Face's "gated-gelu"),
dropout, and a final norm. T5 v1.0 (and GTR, built on it) differs only in a plain ReLU MLP:
`mlp_activations=("relu",)`.

Every parameter carries logical axis names, as in T5X: `vocab`, `embed`, `joined_kv`
(heads x head dim of the attention kernels), `mlp`, `heads`, `relpos_buckets`; activations
are constrained to (`batch`, `length`, `embed` | `mlp` | `heads`, `kv`). Partitioning rules
(samtone_jax/partitioning.py) map those names onto the mesh.

Parameter tree of `T5Encoder` (shapes for d = d_model, h = num_heads, k = head_dim):
  token_embedding                     [vocab, d]      (vocab, embed)
  relpos_bias/rel_embedding           [h, buckets]    (heads, relpos_buckets)
  layers_{i}/pre_attention_layer_norm/scale   [d]     (embed,)
  layers_{i}/attention/{query,key,value}/kernel [d, h*k]  (embed, joined_kv)
  layers_{i}/attention/out/kernel     [h*k, d]        (joined_kv, embed)
  layers_{i}/pre_mlp_layer_norm/scale [d]             (embed,)
  layers_{i}/mlp/wi_{j}/kernel        [d, d_ff]       (embed, mlp); `wi` for one activation
  layers_{i}/mlp/wo/kernel            [d_ff, d]       (mlp, embed)
  encoder_norm/scale                  [d]             (embed,)
"""

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from samtone_jax import dtypes, matmul

Array = jax.Array

_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=True),  # T5's gelu_new
    "relu": nn.relu,
    "linear": lambda x: x,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5 encoder. Defaults: T5 v1.1 base.

  Attributes:
    vocab_size: rows of the token embedding (T5: 32128, the 32,000 pieces padded).
    d_model: width of the residual stream.
    d_ff: width of the MLP.
    num_heads: attention heads.
    head_dim: width of each head (T5: 64; heads x head_dim need not equal d_model).
    num_layers: encoder layers.
    dropout_rate: dropout on embeddings, attention weights, MLP hidden and layer outputs.
    mlp_activations: ("gelu", "linear") is T5 v1.1's gated GELU; ("relu",) is T5 v1.0's.
    relative_attention_num_buckets: buckets of the relative position bias.
    relative_attention_max_distance: distance beyond which positions share a bucket.
    layer_norm_epsilon: epsilon of the RMS norms.
    dtype: activations' dtype (e.g. jnp.bfloat16); norms, attention softmax in float32,
      dense products accumulated in float32 (samtone_jax/matmul.py). 'auto': this
      machine's (`dtypes.activation_dtype`: bfloat16 on GPU, TPU and CPUs with AVX512-BF16
      or AMX, else float32).
    param_dtype: parameters' dtype.
    remat: recompute each layer's activations in the backward pass (jax.checkpoint),
      trading compute for memory with large batches.
  """
  vocab_size: int = 32128
  d_model: int = 768
  d_ff: int = 2048
  num_heads: int = 12
  head_dim: int = 64
  num_layers: int = 12
  dropout_rate: float = 0.0
  mlp_activations: Sequence[str] = ("gelu", "linear")
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False

  def __post_init__(self):
    # Canonical forms, so that configs are hashable and compare equal whatever gin gave
    # (a list of activations, a dtype name such as 'bfloat16').
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    if isinstance(self.dtype, str) and self.dtype == dtypes.AUTO:
      object.__setattr__(self, "dtype", dtypes.activation_dtype())
    for name in ("dtype", "param_dtype"):
      try:
        object.__setattr__(self, name, jnp.dtype(getattr(self, name)))
      except TypeError:
        raise ValueError(f"T5Config.{name}={getattr(self, name)!r} is not a dtype"
                         + (f" nor {dtypes.AUTO!r}." if name == "dtype" else ".")) from None
    unknown = [a for a in self.mlp_activations if a not in _ACTIVATIONS]
    if unknown or not self.mlp_activations:
      raise ValueError(f"T5Config.mlp_activations must be names from {sorted(_ACTIVATIONS)},"
                       f" got {self.mlp_activations!r}.")
    for name in ("vocab_size", "d_model", "d_ff", "num_heads", "head_dim", "num_layers",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
        raise ValueError(f"T5Config.{name} must be a positive int, got {getattr(self, name)!r}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}.")


def _param(module, name, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
  """T5's layer norm: x / sqrt(mean(x^2) + eps) * scale, in float32. [..., d] -> [..., d]"""
  epsilon: float
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",),
                   self.param_dtype)
    x = x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * scale.astype(jnp.float32)).astype(self.dtype)


class Dense(nn.Module):
  """A linear map without bias over the last axis: [..., n] -> [..., features]."""
  features: int
  axes: tuple[str, str]
  dtype: Any
  param_dtype: Any
  kernel_init: Any = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = _param(self, "kernel", self.kernel_init, (x.shape[-1], self.features), self.axes,
                    self.param_dtype)
    # One [tokens, n] x [n, features] product: its backward pass contracts the kernel's
    # gradient over a single tokens axis, which XLA (on CPU) computes from the row-major
    # activations as they are; contracting over [batch, length] it first transposes them.
    y = matmul.matmul(x.reshape(-1, x.shape[-1]), kernel, self.dtype)
    return y.reshape(*x.shape[:-1], self.features)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bidirectional relative position buckets, [length, length] int32 (query, key).

  Half of the buckets are for keys after the query. Within each half, distances below
  num_buckets / 4 have a bucket each; larger ones share logarithmically wider buckets up to
  max_distance. Computed in float32 as in Hugging Face's T5 (so bucket edges agree).
  """
  num_buckets //= 2
  position = np.arange(length, dtype=np.int64)
  relative = position[None, :] - position[:, None]  # key - query
  buckets = (relative > 0).astype(np.int64) * num_buckets
  distance = np.abs(relative)
  max_exact = num_buckets // 2
  far = np.maximum(distance, max_exact).astype(np.float32)  # the small branch uses distance
  large = max_exact + (
      np.log(far / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
      * np.float32(num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class RelativePositionBias(nn.Module):
  """The bias added to every layer's attention logits: [] -> [1, heads, length, length]."""
  config: T5Config

  @nn.compact
  def __call__(self, length: int) -> Array:
    cfg = self.config
    table = _param(self, "rel_embedding",
                   nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   (cfg.num_heads, cfg.relative_attention_num_buckets),
                   ("heads", "relpos_buckets"), cfg.param_dtype)
    buckets = relative_position_buckets(length, cfg.relative_attention_num_buckets,
                                        cfg.relative_attention_max_distance)
    return table.astype(jnp.float32)[:, buckets][None]


class SelfAttention(nn.Module):
  """Multi-head self-attention without logit scaling: [B, L, d] -> [B, L, d]."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    """bias: [B or 1, heads, L, L] float32, relative positions plus the padding mask."""
    cfg = self.config
    joined = cfg.num_heads * cfg.head_dim
    dense = lambda name, init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"): Dense(
        joined, ("embed", "joined_kv"), cfg.dtype, cfg.param_dtype, init, name=name)
    # T5 does not divide the logits by sqrt(head_dim); its query initialiser does instead.
    query_init = nn.initializers.variance_scaling(1.0 / cfg.head_dim, "fan_in", "normal")
    split = lambda y: nn.with_logical_constraint(
        y.reshape(*y.shape[:-1], cfg.num_heads, cfg.head_dim), ("batch", "length", "heads", "kv"))
    q = split(dense("query", query_init)(x))  # [B, L, h, k]
    k = split(dense("key")(x))
    v = split(dense("value")(x))

    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits + bias, axis=-1).astype(cfg.dtype)  # [B, h, L, L]
    weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x.shape[:-1], joined)
    return Dense(cfg.d_model, ("joined_kv", "embed"), cfg.dtype, cfg.param_dtype,
                 nn.initializers.variance_scaling(1.0, "fan_in", "normal"), name="out")(out)


class Mlp(nn.Module):
  """T5's MLP: the product of one projection per activation, then back: [B, L, d] -> same."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    names = ["wi"] if len(cfg.mlp_activations) == 1 else [
        f"wi_{i}" for i in range(len(cfg.mlp_activations))]
    hidden = None
    for name, activation in zip(names, cfg.mlp_activations):
      h = _ACTIVATIONS[activation](
          Dense(cfg.d_ff, ("embed", "mlp"), cfg.dtype, cfg.param_dtype, name=name)(x))
      hidden = h if hidden is None else hidden * h
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
    return Dense(cfg.d_model, ("mlp", "embed"), cfg.dtype, cfg.param_dtype, name="wo")(hidden)


class EncoderLayer(nn.Module):
  """Pre-norm residual attention and MLP blocks: [B, L, d] -> [B, L, d]."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype, name=name)
    dropout = nn.Dropout(cfg.dropout_rate)
    h = SelfAttention(cfg, name="attention")(norm("pre_attention_layer_norm")(x), bias,
                                              deterministic)
    x = x + dropout(h, deterministic=deterministic)
    h = Mlp(cfg, name="mlp")(norm("pre_mlp_layer_norm")(x), deterministic)
    x = x + dropout(h, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class T5Encoder(nn.Module):
  """T5 encoder: token ids [B, L] int32 (0 = padding) -> final hidden states [B, L, d_model].

  Padding keys are masked out of attention; padding positions still get (unused) outputs.
  """
  config: T5Config

  @nn.compact
  def __call__(self, input_ids: Array, deterministic: bool = True) -> Array:
    cfg = self.config
    embedding = _param(self, "token_embedding", nn.initializers.normal(stddev=1.0),
                       (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.param_dtype)
    x = jnp.take(embedding, input_ids, axis=0).astype(cfg.dtype)  # [B, L, d]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)

    length = input_ids.shape[-1]
    padding = jnp.where(input_ids > 0, 0.0, -1e10).astype(jnp.float32)  # [B, L] over keys
    bias = RelativePositionBias(cfg, name="relpos_bias")(length) + padding[:, None, None, :]

    layer = nn.remat(EncoderLayer, static_argnums=(3,)) if cfg.remat else EncoderLayer
    for i in range(cfg.num_layers):
      x = layer(cfg, name=f"layers_{i}")(x, bias, deterministic)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, cfg.param_dtype, name="encoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


def param_shapes(config: T5Config) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Shapes of `T5Encoder(config)`'s parameters by path, computed without allocating them."""
  abstract = jax.eval_shape(lambda: T5Encoder(config).init(
      jax.random.key(0), jnp.ones((1, 1), jnp.int32)))
  return {path: leaf.shape
          for path, leaf in traverse_util.flatten_dict(nn.unbox(abstract["params"])).items()}
