"""The train state and the train step: pure functions, jit-compiled once with shardings.

`create_train_state` initialises parameters and optimizer state directly sharded over the
mesh (shapes from `jax.eval_shape`, placements from the logical axis rules), so no device
ever holds a full copy of a model-parallel weight. `make_train_step` returns the pure step
`(state, batch) -> (state, metrics)`; `compile_train_step` jits it with explicit in/out
shardings and donates the old state. The loss sees the global batch: in-batch negatives are
the whole batch whatever the mesh.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from samtone_jax import dual_encoder, partitioning

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; params: the model's parameters; opt_state: the optimizer's."""
  step: jax.Array
  params: Any
  opt_state: Any


def example_batch(batch_size: int, lengths: dict[str, int], num_negatives: int = 0) -> Batch:
  """Zeros shaped like a batch of the input pipeline (for initialisation and tracing)."""
  batch = {"queries": jnp.zeros((batch_size, lengths["queries"]), jnp.int32),
           "passages": jnp.zeros((batch_size, lengths["passages"]), jnp.int32)}
  if num_negatives:
    batch["negative_passages"] = jnp.zeros(
        (batch_size, num_negatives, lengths["passages"]), jnp.int32)
  return batch


def _model_inputs(batch: Batch) -> tuple:
  return batch["queries"], batch["passages"], batch.get("negative_passages")


def create_train_state(model: dual_encoder.DualEncoder, optimizer: optax.GradientTransformation,
                       rng: jax.Array, batch: Batch, mesh: Mesh, rules: partitioning.LogicalRules,
                       abstract: bool = False) -> tuple[TrainState, TrainState]:
  """A freshly initialised, sharded TrainState, and the tree of its shardings.

  Args:
    model: the dual encoder.
    optimizer: the optax transformation.
    rng: the initialisation key.
    batch: a batch (only shapes matter; `example_batch`).
    mesh: the device mesh.
    rules: logical axis rules.
    abstract: return jax.ShapeDtypeStructs (with their shardings) instead of arrays, e.g. as
      the target of a checkpoint restore: nothing is allocated.

  Returns:
    (state, shardings): shardings has TrainState's structure with NamedSharding leaves.
  """
  def init(rng):
    params = nn.unbox(model.init(rng, *_model_inputs(batch))["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))

  abstract_boxed = jax.eval_shape(lambda rng: model.init(rng, *_model_inputs(batch))["params"],
                                  rng)
  shardings = state_shardings(optimizer, abstract_boxed, mesh, rules)
  if abstract:
    shapes = jax.eval_shape(init, rng)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        shapes, shardings), shardings
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


def state_shardings(optimizer: optax.GradientTransformation, abstract_boxed_params: Any,
                    mesh: Mesh, rules: partitioning.LogicalRules) -> TrainState:
  """Shardings of a TrainState: parameters by their logical axes; optimizer entries shaped
  like their parameter take its sharding, the others (factored moments, counts) are
  replicated."""
  param_shardings = partitioning.logical_shardings(abstract_boxed_params, mesh, rules)
  param_shardings = nn.unbox(param_shardings)
  abstract_params = nn.unbox(abstract_boxed_params)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = NamedSharding(mesh, PartitionSpec())
  opt_shardings = optax.tree_map_params(
      optimizer,
      lambda leaf, param, sharding: sharding if leaf.shape == param.shape else replicated,
      abstract_opt, abstract_params, param_shardings,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)


def embed_batch(model: dual_encoder.DualEncoder, params: Any, batch: Batch,
                rng: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """The batch's embeddings: {"query": [B, E], "passage": [B, E]} (and "negative":
  [B, k, E] with hard negatives). With `rng`, dropout is on (training); without, the model
  is deterministic (evaluation)."""
  return model.apply({"params": params}, *_model_inputs(batch), deterministic=rng is None,
                     rngs=None if rng is None else {"dropout": rng})


def embeddings_loss(loss_fn: Callable, embeddings: dict[str, jax.Array], batch: Batch
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`loss_fn` on the embeddings of `embed_batch` and the batch's content ids."""
  return loss_fn(embeddings["query"], embeddings["passage"],
                 negative_emb=embeddings.get("negative"), query_ids=batch.get("query_ids"),
                 passage_ids=batch.get("passage_ids"),
                 negative_ids=batch.get("negative_passage_ids"))


def batch_loss(model: dual_encoder.DualEncoder, loss_fn: Callable, params: Any, batch: Batch,
               rng: Optional[jax.Array] = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Embeds a batch and takes the loss: (loss, metrics). With `rng`, dropout is on (training);
  without, the model is deterministic (evaluation)."""
  return embeddings_loss(loss_fn, embed_batch(model, params, batch, rng), batch)


def _chunks(x: jax.Array, num_chunks: int) -> jax.Array:
  """[B, ...] -> [num_chunks, B / num_chunks, ...], chunk j holding rows j, j + n, j + 2n, ...
  (n = num_chunks). With the batch split evenly over D devices and D dividing the chunk
  size, each chunk takes the same rows from every device: encoding it needs no transfer."""
  return x.reshape(-1, num_chunks, *x.shape[1:]).swapaxes(0, 1)


def _unchunk(x: jax.Array) -> jax.Array:
  """The inverse of `_chunks`: [num_chunks, B / num_chunks, ...] -> [B, ...]."""
  return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


def grad_cache_loss_and_grad(model: dual_encoder.DualEncoder, loss_fn: Callable, params: Any,
                             batch: Batch, rng: jax.Array, chunk_size: int
                             ) -> tuple[tuple[jax.Array, dict[str, jax.Array]], Any]:
  """`((loss, metrics), grads)` of `batch_loss` with gradient caching: activations of one
  chunk of the batch at a time, the loss over the whole (global) batch.

  1. Encode the batch chunk by chunk, keeping only the embeddings ([B, E]).
  2. Take the loss of all embeddings and its gradient with respect to them.
  3. Encode each chunk again and back-propagate its rows of that gradient into the
     parameters, summing over chunks.
  Chunk j (rows j, j + n, ... of the batch, n = B / chunk_size) drops out with
  `fold_in(rng, j)` in both passes, so pass 3 differentiates exactly what pass 1 computed.
  The gradients are those of the plain step's computation with that dropout, to float
  rounding; the memory of activations falls by B / chunk_size, for one more forward pass.

  Args:
    model, loss_fn, params, batch, rng: as `batch_loss` (rng: the step's dropout key).
    chunk_size: examples encoded at a time; divides the batch (GRAD_CACHE_CHUNK).

  Returns:
    `((loss, metrics), grads)`, as `jax.value_and_grad(batch_loss, has_aux=True)`.

  References:
    Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
    RepL4NLP 2021. https://arxiv.org/abs/2101.06983
  """
  batch_size = batch["queries"].shape[0]
  if not isinstance(chunk_size, int) or chunk_size <= 0 or batch_size % chunk_size:
    raise ValueError(f"GRAD_CACHE_CHUNK={chunk_size!r} must be a positive int that divides the"
                     f" global batch of {batch_size} examples.")
  num_chunks = batch_size // chunk_size
  inputs = {k: _chunks(batch[k], num_chunks)
            for k in ("queries", "passages", "negative_passages") if k in batch}
  index = jnp.arange(num_chunks)

  def embed(params, chunk, j):
    return embed_batch(model, params, chunk, jax.random.fold_in(rng, j))

  embeddings = lax.map(lambda xs: embed(params, *xs), (inputs, index))  # 1: [n, B/n, E] ...
  (loss, metrics), embedding_grads = jax.value_and_grad(  # 2
      lambda e: embeddings_loss(loss_fn, e, batch), has_aux=True)(
          jax.tree.map(_unchunk, embeddings))

  def accumulate(grads, xs):  # 3
    chunk, j, chunk_grads = xs
    _, vjp = jax.vjp(lambda p: embed(p, chunk, j), params)
    return jax.tree.map(jnp.add, grads, vjp(chunk_grads)[0]), None

  grads, _ = lax.scan(accumulate, jax.tree.map(jnp.zeros_like, params),
                      (inputs, index, jax.tree.map(lambda g: _chunks(g, num_chunks),
                                                   embedding_grads)))
  return (loss, metrics), grads


def make_train_step(model: dual_encoder.DualEncoder, optimizer: optax.GradientTransformation,
                    loss_fn: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
                    learning_rate: optax.Schedule, dropout_seed: int = 0,
                    grad_cache_chunk: Optional[int] = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """The pure train step: embeds the global batch, takes the loss and its gradient, updates.

  Args:
    model: the dual encoder.
    optimizer: the optax transformation.
    loss_fn: `(query_emb, passage_emb, *, negative_emb, query_ids, passage_ids,
      negative_ids) -> (loss, metrics)`, e.g. `losses.sharded_contrastive_loss(mesh, ...)`.
    learning_rate: the schedule, for the summaries.
    dropout_seed: dropout's random numbers are `fold_in(key(dropout_seed), step)`, so a
      resumed run draws the same ones.
    grad_cache_chunk: None, or encode this many examples at a time with gradient caching
      (`grad_cache_loss_and_grad`): the same loss over the whole batch in less memory.

  Returns:
    `step(state, batch) -> (state, metrics)`: metrics are float32 scalars: the loss's
    metrics, `learning_rate` and `grad_norm`.
  """
  if grad_cache_chunk is None:
    loss_and_grad = jax.value_and_grad(functools.partial(batch_loss, model, loss_fn),
                                       has_aux=True)
  else:
    loss_and_grad = functools.partial(grad_cache_loss_and_grad, model, loss_fn,
                                      chunk_size=grad_cache_chunk)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(jax.random.key(dropout_seed), state.step)
    (_, metrics), grads = loss_and_grad(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, learning_rate=jnp.asarray(learning_rate(state.step), jnp.float32),
                   grad_norm=optax.tree.norm(grads))
    return dataclasses.replace(state, step=state.step + 1, params=params,
                               opt_state=opt_state), metrics

  return step


def compile_train_step(step: Callable, state_shardings_: TrainState, mesh: Mesh,
                       rules: partitioning.LogicalRules, data_axes=("data",)) -> Callable:
  """jit of `step` with the state's shardings in and out, the batch split over the data
  axes, replicated metrics, and the old state donated."""
  batch_sharding = NamedSharding(mesh, PartitionSpec(tuple(data_axes)))
  replicated = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(step, in_shardings=(state_shardings_, batch_sharding),
                   out_shardings=(state_shardings_, replicated), donate_argnums=(0,))

  def run(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)

  return run


def skip_nonfinite(step: Callable) -> Callable:
  """`step`, but a step whose loss or gradient norm is not finite (a poisoned batch) keeps
  the parameters and the optimizer's moments as they were; the step count still advances,
  and so do the optimizer's own counters (its integer leaves: the schedule's and
  Adafactor's step counts), so that the data, dropout and the applied learning rate go on
  as in a run without that batch.

  Args:
    step: `(state, batch) -> (state, metrics)` whose metrics hold `loss` and `grad_norm`
      (`make_train_step`).

  Returns:
    The same function, its metrics gaining `skipped`: 1.0 for a skipped step, else 0.0.
  """
  def guarded(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    new, metrics = step(state, batch)
    ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    def keep(n, o):  # counters follow state.step; values are those of the last good step
      return n if jnp.issubdtype(n.dtype, jnp.integer) else jnp.where(ok, n, o)
    return jax.tree.map(keep, new, state), dict(
        metrics, skipped=jnp.where(ok, 0.0, 1.0).astype(jnp.float32))

  return guarded
