"""Every kernel has the reference semantics (summed mini-batch SGD, word2vec.c's gradient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from w2v_dist.kernels import numba_cpu, reference


def _batch(model: str, V=50, B=300, K=5, W=3, seed=0):
    rng = np.random.default_rng(seed)
    outputs = rng.integers(0, V, B).astype(np.int32)
    negatives = rng.integers(0, V, (B, K)).astype(np.int32)
    negatives[:10, 0] = outputs[:10]  # a negative equal to the positive must be skipped
    if model == "sg":
        inputs = rng.integers(0, V, B).astype(np.int32)
    else:
        inputs = rng.integers(0, V, (B, 2 * W)).astype(np.int32)
        inputs[rng.random(inputs.shape) < 0.4] = -1
        inputs[0] = -1
    return inputs, outputs, negatives


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_numba_matches_reference(model):
    V, d = 50, 16
    g = torch.Generator().manual_seed(0)
    W_in = torch.randn(V, d, generator=g) * 0.3
    W_out = torch.randn(V, d, generator=g) * 0.3
    inputs, outputs, negatives = _batch(model, V)
    ref_in, ref_out = W_in.clone(), W_out.clone()
    step_ref = reference.sg_step if model == "sg" else reference.cbow_step
    step_nb = numba_cpu.sg_step if model == "sg" else numba_cpu.cbow_step
    loss_ref = step_ref(ref_in, ref_out, *(torch.from_numpy(a).long() for a in (inputs, outputs, negatives)), 0.05)
    nb_in, nb_out = W_in.clone(), W_out.clone()
    loss_nb = step_nb(nb_in, nb_out, inputs, outputs, negatives, 0.05)
    assert loss_nb == pytest.approx(loss_ref, rel=1e-4)
    torch.testing.assert_close(nb_in, ref_in, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nb_out, ref_out, rtol=1e-4, atol=1e-5)
    assert not torch.equal(nb_out, W_out), "the step changed nothing"


def test_gradient_is_the_loss_gradient():
    """The reference update equals -lr * autograd gradient of the word2vec loss."""
    V, d, lr = 20, 8, 0.1
    g = torch.Generator().manual_seed(1)
    W_in = torch.randn(V, d, generator=g) * 0.5
    W_out = torch.randn(V, d, generator=g) * 0.5
    inputs, outputs, negatives = (torch.from_numpy(a).long() for a in _batch("sg", V, B=40, K=3))
    a, b = W_in.clone().requires_grad_(), W_out.clone().requires_grad_()
    h = a[inputs]
    pos = (b[outputs] * h).sum(-1)
    neg = torch.einsum("bkd,bd->bk", b[negatives], h)
    valid = (negatives != outputs[:, None]).float()
    loss = -(torch.nn.functional.logsigmoid(pos).sum() + (torch.nn.functional.logsigmoid(-neg) * valid).sum())
    loss.backward()
    new_in, new_out = W_in.clone(), W_out.clone()
    got = reference.sg_step(new_in, new_out, inputs, outputs, negatives, lr)
    assert got == pytest.approx(loss.item(), rel=1e-5)
    torch.testing.assert_close(new_in, W_in - lr * a.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_out, W_out - lr * b.grad, rtol=1e-5, atol=1e-6)


def test_numba_is_deterministic_across_thread_counts():
    import numba
    V, d = 30, 8
    inputs, outputs, negatives = _batch("sg", V, B=500)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        W_in = torch.full((V, d), 0.1)
        W_out = torch.full((V, d), 0.05)
        numba_cpu.sg_step(W_in, W_out, inputs, outputs, negatives, 0.05)
        results.append((W_in, W_out))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("model", ["sg", "cbow"])
@pytest.mark.parametrize("kernel", ["numba", "torch"])
@pytest.mark.parametrize("sparse", [True, False])
def test_autograd_path_equals_fused_step(model, kernel, sparse):
    """The path DistributedDataParallel takes (forward, backward to sparse or dense gradients,
    SGD) updates the tables exactly as the fused in-place step does."""
    from w2v_dist.model import Word2Vec
    from w2v_dist.pairs import Examples

    V, d, lr = 50, 8, 0.05
    inputs, outputs, negatives = _batch(model, V)
    ex = Examples(inputs, outputs, negatives, 0)
    fused, graph = (Word2Vec(V, d, model, seed=3, kernel=kernel, sparse=sparse) for _ in range(2))
    with torch.no_grad():  # non-zero output rows, so that both tables get a gradient
        for m in (fused, graph):
            m.out_embed.weight.copy_(torch.linspace(-0.1, 0.1, V * d).reshape(V, d))
    want = fused.step(ex, lr)
    opt = torch.optim.SGD(graph.parameters(), lr=lr)
    loss = graph(*graph.batch(ex))
    loss.backward()
    assert graph.in_embed.weight.grad.is_sparse == sparse
    opt.step()
    assert loss.item() == pytest.approx(want, rel=1e-5)
    for name, table in graph.tables().items():
        torch.testing.assert_close(table, fused.tables()[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(graph.in_embed.weight, Word2Vec(V, d, model, seed=3).in_embed.weight)
