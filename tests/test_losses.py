"""contrastive_loss against the term-by-term reference of tests/loss_reference.py."""

import functools
import itertools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samtone_jax import losses
from tests.loss_reference import reference_loss, reference_metrics

# Every valid combination of the loss options.
OPTIONS = [
    dict(same_tower=s, bidirectional=b, pair_alpha=a)
    for s, b, a in itertools.product(losses.SAME_TOWER_OPTIONS, (True, False), (0.0, 0.1))
    if b or s in ("none", "query")
]


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _batch(seed, batch, dim, k=0, id_range=None):
  """Random unit embeddings; with id_range, ids in [0, id_range) and equal ids = equal rows.

  Hard negatives' ids are in [-1, id_range): -1 marks an empty slot, and a negative with a
  passage's id is a copy of that passage (a mined negative that is someone's positive).
  """
  rng = np.random.default_rng(seed)
  q = _normalize(rng.normal(size=(batch, dim)))
  p = _normalize(rng.normal(size=(batch, dim)))
  n = _normalize(rng.normal(size=(batch, k, dim))) if k else None
  qids = pids = nids = None
  if id_range:
    qids = rng.integers(0, id_range, batch).astype(np.int32)
    pids = rng.integers(0, id_range, batch).astype(np.int32)
    # Real duplicates: the first row with an id gives its embedding to every copy.
    q = q[[int(np.argmax(qids == i)) for i in qids]]
    p = p[[int(np.argmax(pids == i)) for i in pids]]
    if k:
      nids = rng.integers(-1, id_range, (batch, k)).astype(np.int32)
      copies = np.isin(nids, pids)
      n[copies] = p[[int(np.argmax(pids == i)) for i in nids[copies]]]
  return q, p, n, qids, pids, nids


def _call(q, p, n, qids, pids, temperature, nids=None, **options):
  as_ints = lambda ids: None if ids is None else jnp.asarray(ids)
  return losses.contrastive_loss(
      jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32), temperature=temperature,
      negative_emb=None if n is None else jnp.asarray(n, jnp.float32),
      query_ids=as_ints(qids), passage_ids=as_ints(pids), negative_ids=as_ints(nids),
      **options)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 9),
    dim=st.integers(1, 6),
    k=st.integers(0, 3),
    id_range=st.sampled_from([None, 2, 4, 100]),
    use_ids=st.sampled_from(["both", "query", "passage"]),
    temperature=st.sampled_from([0.01, 0.05, 1.0]),
    options=st.sampled_from(OPTIONS),
)
def test_loss_matches_reference(seed, batch, dim, k, id_range, use_ids, temperature, options):
  q, p, n, qids, pids, nids = _batch(seed, batch, dim, k, id_range)
  if use_ids == "query":
    pids = None
  elif use_ids == "passage":
    qids = None
  loss, metrics = _call(q, p, n, qids, pids, temperature, nids, **options)
  want, parts = reference_loss(q, p, temperature=temperature, negatives=n, query_ids=qids,
                               passage_ids=pids, negative_ids=nids, **options)
  # float32 logits of size up to 1/t = 100: allow a few float32 ulps of that.
  tol = dict(rtol=2e-5, atol=2e-5 / temperature)
  np.testing.assert_allclose(loss, want, **tol)
  np.testing.assert_allclose(metrics["loss"], want, **tol)
  np.testing.assert_allclose(metrics["loss_qp"], parts["loss_qp"], **tol)
  if options["bidirectional"]:
    np.testing.assert_allclose(metrics["loss_pq"], parts["loss_pq"], **tol)
  else:
    assert "loss_pq" not in metrics
  if options["pair_alpha"]:
    np.testing.assert_allclose(metrics["loss_pair"], parts["loss_pair"], **tol)
  else:
    assert "loss_pair" not in metrics


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31), batch=st.integers(1, 9), k=st.integers(0, 2),
                  id_range=st.sampled_from([None, 3]))
def test_metrics_match_reference(seed, batch, k, id_range):
  rng = np.random.default_rng(seed)
  q, p, n, _, _, _ = _batch(seed, batch, 5, k)  # distinct rows: no exact ties to rank
  qids = pids = nids = None
  if id_range:
    qids, pids = rng.integers(0, id_range, (2, batch)).astype(np.int32)
    nids = rng.integers(-1, id_range, (batch, k)).astype(np.int32) if k else None
  _, metrics = _call(q, p, n, qids, pids, 0.05, nids, same_tower="query", bidirectional=True,
                     pair_alpha=0.0)
  want = reference_metrics(q, p, negatives=n, query_ids=qids, passage_ids=pids,
                           negative_ids=nids)
  for name, value in want.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("with_extras", [False, True], ids=["plain", "negatives+ids"])
def test_gradients_match_reference(options, with_extras):
  """jax.grad of the library loss == jax.grad of the term-by-term jnp transcription."""
  q, p, n, qids, pids, nids = _batch(7, 6, 4, k=2 if with_extras else 0,
                               id_range=3 if with_extras else None)
  q, p = jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32)
  n = None if n is None else jnp.asarray(n, jnp.float32)
  t = 0.05

  def ours(q, p, n):
    return losses.contrastive_loss(q, p, temperature=t, negative_emb=n, query_ids=qids,
                                   passage_ids=pids, negative_ids=nids, **options)[0]

  def reference(q, p, n):
    return reference_loss(q, p, temperature=t, negatives=n, query_ids=qids, passage_ids=pids,
                          negative_ids=nids, xp=jnp, **options)[0]

  argnums = (0, 1, 2) if with_extras else (0, 1)
  got = jax.grad(ours, argnums)(q, p, n)
  want = jax.grad(reference, argnums)(q, p, n)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(g))


def test_gradient_matches_finite_differences():
  """Directional derivative of the loss against central differences, in float64 numpy."""
  q, p, n, qids, pids, nids = _batch(3, 5, 4, k=1, id_range=3)
  options = dict(temperature=0.5, same_tower="both", bidirectional=True, pair_alpha=0.1)
  grads = jax.grad(
      lambda q, p: _call(q, p, n, qids, pids, **options)[0], (0, 1))(
          jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32))
  rng = np.random.default_rng(0)
  dq, dp = rng.normal(size=q.shape), rng.normal(size=p.shape)
  f = lambda e: reference_loss(q + e * dq, p + e * dp, negatives=n, query_ids=qids,
                               passage_ids=pids, **options)[0]
  eps = 1e-5
  numeric = (f(eps) - f(-eps)) / (2 * eps)
  analytic = np.sum(grads[0] * dq) + np.sum(grads[1] * dp)
  np.testing.assert_allclose(analytic, numeric, rtol=1e-4)


def test_worked_example():
  """Two examples, numbers by hand: log(e^0.6 + e^0.8) - 0.6 for each row."""
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  p = jnp.array([[0.6, 0.8], [0.8, 0.6]])
  loss, metrics = losses.contrastive_loss(q, p, temperature=1.0, same_tower="none",
                                          bidirectional=False)
  np.testing.assert_allclose(loss, np.log(np.exp(0.6) + np.exp(0.8)) - 0.6, rtol=1e-6)
  assert metrics["accuracy_qp"] == 0.0  # both positives lose to the other passage
  np.testing.assert_allclose(metrics["mrr_qp"], 0.5)
  # SamToNe adds e^{q_0 . q_1} = e^0 to both rows.
  loss, _ = losses.contrastive_loss(q, p, temperature=1.0, same_tower="query",
                                    bidirectional=False)
  np.testing.assert_allclose(loss, np.log(np.exp(0.6) + np.exp(0.8) + 1.0) - 0.6, rtol=1e-6)


def test_duplicates_are_removed_exactly():
  """Two copies of one query with two different answers: with ids, each row keeps only its
  positive (loss exactly 0); without ids, the copy's answer is a false negative."""
  q = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  p = jnp.array([[0.6, 0.8], [0.8, 0.6]])
  qids = jnp.array([5, 5])
  loss, _ = losses.contrastive_loss(q, p, temperature=0.01, same_tower="query",
                                    bidirectional=True, query_ids=qids)
  assert float(loss) == 0.0
  loss, _ = losses.contrastive_loss(q, p, temperature=0.01, same_tower="query")
  assert float(loss) > 10.0


def test_hard_negatives_that_are_positives_are_removed_exactly():
  """A mined negative that is a copy of the anchor's positive, and an empty slot (id -1),
  leave the anchor's row; the copy stays a negative of the other row. Numbers by hand."""
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  p = jnp.array([[0.6, 0.8], [0.8, 0.6]])
  n = jnp.array([[[0.6, 0.8], [0.0, 0.0]],  # a copy of p_0; an empty slot
                 [[0.8, 0.6], [-1.0, 0.0]]])  # a copy of p_1; a true negative
  options = dict(temperature=1.0, same_tower="none", bidirectional=False, negative_emb=n,
                 negative_ids=jnp.array([[1, -1], [2, 9]]), query_ids=jnp.array([5, 7]))
  e = np.exp
  # Row 0 keeps p_0, p_1, the copy of p_1 and [-1, 0]; row 1 keeps p_1, p_0, the copy of p_0
  # and [-1, 0] (at 0).
  rows = [np.log(e(.6) + e(.8) + e(.8) + e(-1.0)) - .6, np.log(e(.6) + e(.8) + e(.8) + 1) - .6]
  loss, _ = losses.contrastive_loss(q, p, passage_ids=jnp.array([1, 2]), **options)
  np.testing.assert_allclose(loss, np.mean(rows), rtol=1e-6)
  # Without passage ids only the empty slot leaves: each row gains its positive's copy.
  loss, _ = losses.contrastive_loss(q, p, **options)
  np.testing.assert_allclose(loss, np.mean([np.log(e(.6) + e(.8) + e(.8) + e(-1.0) + e(.6))
                                            - .6, np.log(e(.6) + e(.8) + e(.8) + 1 + e(.6))
                                            - .6]), rtol=1e-6)


def test_masked_term_cannot_win_in_bfloat16():
  """A masked copy far above every kept logit changes nothing, also from bfloat16 inputs."""
  q = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], jnp.bfloat16)
  p = jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], jnp.bfloat16)
  # Row 0's positive scores 0, its copy's passage scores 1/t = 100 but shares the query id.
  with_copy, _ = losses.contrastive_loss(q, p, temperature=0.01, same_tower="none",
                                         bidirectional=False, query_ids=jnp.array([0, 0, 1]))
  want, _ = reference_loss(np.asarray(q, np.float64), np.asarray(p, np.float64),
                           temperature=0.01, same_tower="none", bidirectional=False,
                           pair_alpha=0.0, query_ids=[0, 0, 1])
  np.testing.assert_allclose(with_copy, want, rtol=1e-6)


def test_bfloat16_inputs_are_computed_in_float32():
  """Temperature 0.01 from bfloat16 embeddings: finite, equal to the float32 computation on
  the same (rounded) values, and within the bound that bf16 rounding of the inputs allows."""
  q, p, n, qids, pids, nids = _batch(11, 32, 64, k=2, id_range=8)
  options = dict(temperature=0.01, same_tower="both", bidirectional=True, pair_alpha=0.1,
                 negative_emb=jnp.asarray(n, jnp.bfloat16), query_ids=jnp.asarray(qids),
                 passage_ids=jnp.asarray(pids))
  q16, p16 = jnp.asarray(q, jnp.bfloat16), jnp.asarray(p, jnp.bfloat16)
  loss16, metrics = losses.contrastive_loss(q16, p16, **options)
  assert loss16.dtype == jnp.float32
  assert all(np.isfinite(v) for v in metrics.values())
  grads = jax.grad(lambda q, p: losses.contrastive_loss(q, p, **options)[0], (0, 1))(q16, p16)
  assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)

  options["negative_emb"] = options["negative_emb"].astype(jnp.float32)
  loss32_rounded, _ = losses.contrastive_loss(q16.astype(jnp.float32),
                                              p16.astype(jnp.float32), **options)
  np.testing.assert_allclose(loss16, loss32_rounded, rtol=1e-6)

  # Against the unrounded float32 inputs: each log-softmax term moves by at most twice the
  # largest logit change, and the loss sums four such terms at most (qp, PAIR mix, pq).
  loss32, _ = losses.contrastive_loss(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32),
                                      **options)
  everything = np.concatenate([q, p, n.reshape(-1, n.shape[-1])])
  rounded = np.asarray(jnp.asarray(everything, jnp.bfloat16), np.float64)
  sims = lambda x: x[:64] @ x.T
  max_logit_change = np.max(np.abs(sims(rounded) - sims(everything))) / 0.01
  assert abs(float(loss16) - float(loss32)) <= 4 * max_logit_change
  # And the float32 computation keeps that error small: not bf16 arithmetic on 1/t logits.
  assert abs(float(loss16) - float(loss32)) < 0.1


def test_jit_and_eager_agree():
  q, p, n, qids, pids, nids = _batch(5, 8, 16, k=1, id_range=4)
  loss_fn = functools.partial(losses.contrastive_loss, same_tower="both", pair_alpha=0.1)
  arrays = dict(query_emb=q, passage_emb=p, negative_emb=n, query_ids=qids, passage_ids=pids,
                negative_ids=nids)  # (without them, copies of positives tie with them)
  arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
  eager = loss_fn(**arrays)
  jitted = jax.jit(loss_fn)(**arrays)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jitted)


@pytest.mark.parametrize("kwargs, name", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(same_tower="passage"), "same_tower"),
    (dict(same_tower="document", bidirectional=False), "same_tower"),
    (dict(pair_alpha=1.5), "pair_alpha"),
    (dict(pair_alpha=-0.1), "pair_alpha"),
    (dict(passage_emb=jnp.zeros((4, 3))), "passage_emb"),
    (dict(query_emb=jnp.zeros((4,))), "query_emb"),
    (dict(query_emb=jnp.zeros((4, 2), jnp.int32)), "query_emb"),
    (dict(negative_emb=jnp.zeros((3, 1, 2))), "negative_emb"),
    (dict(negative_emb=jnp.zeros((4, 2))), "negative_emb"),
    (dict(query_ids=jnp.zeros((5,), jnp.int32)), "query_ids"),
    (dict(passage_ids=jnp.zeros((4,), jnp.float32)), "passage_ids"),
    (dict(negative_ids=jnp.zeros((4, 1), jnp.int32)), "negative_ids"),
    (dict(negative_emb=jnp.zeros((4, 2, 2)), negative_ids=jnp.zeros((4, 1), jnp.int32)),
     "negative_ids"),
])
def test_bad_arguments_name_themselves(kwargs, name):
  args = dict(query_emb=jnp.zeros((4, 2)), passage_emb=jnp.zeros((4, 2)))
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    losses.contrastive_loss(args.pop("query_emb"), args.pop("passage_emb"), **args)
