"""Dual encoders: T5 tower(s) -> mean pooling -> projection -> L2 normalisation.

Three architectures (docs/design.md, "Models"; the SamToNe paper, Section 2):
- "sde": symmetric, one tower and one projection for queries and passages;
- "ade": asymmetric, a tower and a projection for each side;
- "ade_spl": asymmetric towers with one shared projection layer.

Parameter tree: "sde" {tower, projection}; "ade" {query_tower, passage_tower,
query_projection, passage_projection}; "ade_spl" {query_tower, passage_tower, projection}.
Each tower is a `t5.T5Encoder` tree, each projection {kernel: [d_model, embedding_dim]} with
logical axes (embed, projection). The module knows no loss.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from samtone_jax import t5

Array = jax.Array
ARCHITECTURES = ("sde", "ade", "ade_spl")


def mean_pool(hidden: Array, input_ids: Array) -> Array:
  """Mean of the hidden states of non-padding tokens: [B, L, d], [B, L] -> [B, d] float32.

  An all-padding row pools to zeros.
  """
  mask = (input_ids > 0).astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=-2)
  return total / jnp.maximum(jnp.sum(mask, axis=-2), 1.0)


def l2_normalize(x: Array, epsilon: float = 1e-12) -> Array:
  """x / max(|x|, epsilon) over the last axis (as torch's F.normalize), gradient-safe at 0."""
  return x * lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True),
                                   epsilon * epsilon))


class DualEncoder(nn.Module):
  """Encodes queries and passages into L2-normalised embeddings.

  Attributes:
    config: the T5 encoder of each tower.
    architecture: "sde", "ade" or "ade_spl".
    embedding_dim: width of the projection (the paper: 768).
  """
  config: t5.T5Config
  architecture: str = "sde"
  embedding_dim: int = 768

  def setup(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"DualEncoder.architecture must be one of {ARCHITECTURES}, got"
                       f" {self.architecture!r}.")
    projection = lambda: t5.Dense(self.embedding_dim, ("embed", "projection"),
                                  jnp.float32, self.config.param_dtype)
    if self.architecture == "sde":
      self.tower = t5.T5Encoder(self.config)
      self.projection = projection()
    else:
      self.query_tower = t5.T5Encoder(self.config)
      self.passage_tower = t5.T5Encoder(self.config)
      if self.architecture == "ade":
        self.query_projection = projection()
        self.passage_projection = projection()
      else:
        self.projection = projection()

  def _encode(self, side: str, input_ids: Array, deterministic: bool) -> Array:
    if self.architecture == "sde":
      tower, projection = self.tower, self.projection
    elif self.architecture == "ade":
      tower = getattr(self, f"{side}_tower")
      projection = getattr(self, f"{side}_projection")
    else:
      tower, projection = getattr(self, f"{side}_tower"), self.projection
    leading = input_ids.shape[:-1]  # [B] or [B, k]
    input_ids = input_ids.reshape(-1, input_ids.shape[-1])
    pooled = mean_pool(tower(input_ids, deterministic=deterministic), input_ids)
    embeddings = l2_normalize(projection(pooled))
    return embeddings.reshape(*leading, self.embedding_dim)

  def encode_queries(self, input_ids: Array, deterministic: bool = True) -> Array:
    """Token ids [..., L] int32 (0 = padding) -> embeddings [..., embedding_dim] float32."""
    return self._encode("query", input_ids, deterministic)

  def encode_passages(self, input_ids: Array, deterministic: bool = True) -> Array:
    """Token ids [..., L] int32 (0 = padding) -> embeddings [..., embedding_dim] float32."""
    return self._encode("passage", input_ids, deterministic)

  def __call__(self, queries: Array, passages: Array, negatives: Optional[Array] = None,
               deterministic: bool = True) -> dict[str, Array]:
    """Embeds a batch.

    Args:
      queries: [B, Lq] int32 token ids.
      passages: [B, Lp] int32 token ids of each query's positive.
      negatives: optional [B, k, Lp] int32 token ids of hard negatives, encoded by the
        passage side together with the positives.
      deterministic: False applies dropout (needs a "dropout" rng).

    Returns:
      {"query": [B, E], "passage": [B, E]} and, with negatives, "negative": [B, k, E].
    """
    out = {"query": self.encode_queries(queries, deterministic)}
    if negatives is None:
      out["passage"] = self.encode_passages(passages, deterministic)
      return out
    batch, k, length = negatives.shape
    if length != passages.shape[-1]:
      raise ValueError(f"negatives must have the passages' length {passages.shape[-1]},"
                       f" got {list(negatives.shape)}.")
    both = self.encode_passages(
        jnp.concatenate([passages, negatives.reshape(batch * k, length)]), deterministic)
    out["passage"] = both[:batch]
    out["negative"] = both[batch:].reshape(batch, k, self.embedding_dim)
    return out
