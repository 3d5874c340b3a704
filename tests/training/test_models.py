"""Every registered CTR model: builds on every field kind, uses every input, trains, and exports to ONNX."""

import numpy as np
import pytest
import torch

from encore.onnx_scorer import OnnxScorer
from training.data import TensorSplit
from training.export import export_onnx
from training.models.registry import CTR_MODELS, get_ctr_model

SMALL = {"embedding_dim": 8, "hidden_units": (32, 16)}
SMALL_BY_MODEL = {
    "LR": {},
    "FM": {"embedding_dim": 8},
    "DeepFM": {**SMALL, "batch_norm": True, "dropout": 0.1},
    "DCNv2": {**SMALL, "num_cross_layers": 2, "batch_norm": True},
    "MaskNet": {**SMALL, "num_blocks": 2, "block_dim": 8},
    "FFM": {"embedding_dim": 4},
    "AFM": {"embedding_dim": 8, "attention_dim": 8, "attention_dropout": (0.1, 0.1)},
    "WideDeep": {**SMALL, "batch_norm": True, "dropout": 0.1},
    "NFM": {**SMALL, "dropout": 0.1},
    "DCN": {**SMALL, "num_cross_layers": 2, "batch_norm": True},
    "xDeepFM": {**SMALL, "cin_hidden_units": (6, 4), "batch_norm": True, "dropout": 0.1},
    "FiGNN": {"embedding_dim": 8, "gnn_layers": 2},
    "FinalMLP": {
        "embedding_dim": 8,
        "mlp1_hidden_units": (32,),
        "mlp2_hidden_units": (16,),
        "mlp1_batch_norm": True,
        "mlp1_dropout": 0.1,
        "fs_hidden_units": (16,),
        "fs1_context": ("user",),
        "num_heads": 2,
    },
    "EulerNet": {"embedding_dim": 8, "shape": (5, 5), "layer_norm": True, "net_ex_dropout": 0.1, "net_im_dropout": 0.1},
    "WuKong": {
        "embedding_dim": 8,
        "num_layers": 2,
        "lcb_features": 4,
        "fmb_features": 4,
        "fmb_hidden_units": (16,),
        "hidden_units": (16,),
        "dropout": 0.1,
    },
}


def build(name, spec, seed=0):
    torch.manual_seed(seed)
    return get_ctr_model(name)(spec, **SMALL_BY_MODEL.get(name, {}))


def test_every_registered_model_has_a_small_test_config():
    assert set(SMALL_BY_MODEL) == set(CTR_MODELS)


@pytest.mark.parametrize("name", list(CTR_MODELS))
def test_forward_shape_and_one_step_lowers_the_loss(name, mixed_data):
    spec, train, _ = mixed_data
    split = TensorSplit.from_frame("train", spec, train)
    model = build(name, spec)
    inputs, labels = next(split.batches(512))
    logits = model(inputs)
    assert logits.shape == (512,) and torch.isfinite(logits).all()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.eval()  # dropout off so the before/after losses are comparable
    before = loss_fn(model(inputs), labels).item()
    model.train()
    for _ in range(5):
        opt.zero_grad()
        loss_fn(model(inputs), labels).backward()
        opt.step()
    model.eval()
    assert loss_fn(model(inputs), labels).item() < before


@pytest.mark.parametrize("name", list(CTR_MODELS))
def test_every_input_field_reaches_the_output(name, mixed_data):
    """No silently dropped field (TASTE's LR/FFM/FinalMLP ignored the dense audio): each input gets gradient."""
    spec, train, _ = mixed_data
    model = build(name, spec)
    model.train()
    inputs, labels = next(TensorSplit.from_frame("train", spec, train).batches(256))
    torch.nn.BCEWithLogitsLoss()(model(inputs), labels).backward()
    emb = model.linear.weights if name == "LR" else model.embedding
    sparse_grad = emb.sparse.weight.grad
    for i, f in enumerate(spec.sparse_fields):
        start = int(emb.offsets[i])
        rows = sparse_grad[start : start + f.num_embeddings]
        assert rows.abs().sum() > 0, f"{name}: sparse field {f.name} gets no gradient"
    assert emb.numeric.grad.abs().sum(dim=1).gt(0).all(), f"{name}: a scaled numeric gets no gradient"
    for f in spec.token_fields:
        assert emb.tokens[f.name].weight.grad.abs().sum() > 0, f"{name}: token field {f.name} unused"
    for f in spec.dense_fields:
        grads = [p.grad for p in emb.dense[f.name].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: dense field {f.name} unused"


@pytest.mark.parametrize("name", list(CTR_MODELS))
def test_onnx_export_matches_torch_on_1000_rows(name, mixed_data, tmp_path):
    spec, train, valid = mixed_data
    model = build(name, spec)
    # A few steps so batch-norm statistics and weights are not at their initial values.
    split = TensorSplit.from_frame("train", spec, train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for inputs, labels in split.batches(1000):
        opt.zero_grad()
        torch.nn.BCEWithLogitsLoss()(model(inputs), labels).backward()
        opt.step()
    model.eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    assert not list(tmp_path.glob(".*.tmp"))
    rows = valid.iloc[:1000]
    packed = spec.encode_packed(rows)
    with torch.no_grad():
        expected = torch.sigmoid(model({k: torch.from_numpy(v) for k, v in packed.items()})).numpy()
    scorer = OnnxScorer(path)
    assert scorer.input_names == spec.input_names()
    got = scorer.score(packed)
    assert got.shape == (1000,)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # Dynamic batch: a single row scores the same as inside the big batch.
    one = scorer.score({k: v[3:4] for k, v in packed.items()})
    np.testing.assert_allclose(one, expected[3:4], atol=1e-5, rtol=0)
    assert np.std(got) > 1e-4  # the scores are not a constant


def test_unknown_model_name_is_a_clear_error():
    from encore.errors import EncoreError

    with pytest.raises(EncoreError, match="unknown model 'DeepFFM'; known models: LR, FM"):
        get_ctr_model("DeepFFM")


def test_cin_outer_product_backward_matches_autograd():
    from training.models.ctr.xdeepfm import _OuterProduct

    torch.manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_OuterProduct.apply, (a, b))
    grad = torch.randn(5, 3, 4, dtype=torch.float64)
    mine = torch.autograd.grad(_OuterProduct.apply(a, b), (a, b), grad)
    plain = torch.autograd.grad(a.unsqueeze(2) * b.unsqueeze(1), (a, b), grad)
    for got, want in zip(mine, plain, strict=True):
        torch.testing.assert_close(got, want)


def test_dropout_keeps_the_expected_value_and_rate_and_is_identity_in_eval():
    from training.models.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3)
    x = torch.ones(2000, 500)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    drop.eval()
    assert torch.equal(drop(x), x)


def test_dropout_mask_is_32_random_bits_against_p_and_its_gradient_is_the_scaled_mask():
    from training.models.layers import Dropout

    drop, x = Dropout(0.4), torch.randn(301, 70, requires_grad=True)
    torch.manual_seed(1)
    y = drop(x)
    torch.manual_seed(1)
    seed = int(torch.randint(0, 2**62, (1,)))
    bits = np.random.SFC64(seed).random_raw((x.numel() + 1) // 2).view(np.uint32)[: x.numel()]
    keep = torch.from_numpy(bits >= round(0.4 * 2**32)).view(x.shape)
    assert torch.equal(y, x * keep * (1.0 / 0.6))  # same seed, same mask: torch.manual_seed fixes it
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, keep * (1.0 / 0.6))
    torch.manual_seed(2)
    assert not torch.equal(drop(x), y)  # a fresh mask on every call


def test_finalmlp_gates_read_their_context_fields_and_refuse_unknown_ones(mixed_data):
    from encore.errors import EncoreError

    spec, train, _ = mixed_data
    model = build("FinalMLP", spec)  # fs1_context=("user",): a table of its own, apart from the main embedding
    inputs, labels = next(TensorSplit.from_frame("train", spec, train).batches(256))
    torch.nn.BCEWithLogitsLoss()(model(inputs), labels).backward()
    assert model.gate1.tables[0].weight.grad.abs().sum() > 0
    with pytest.raises(EncoreError, match=r"context field\(s\) \['tags'\] are not sparse fields"):
        get_ctr_model("FinalMLP")(spec, fs1_context=("tags",))


@pytest.mark.parametrize("dim", [1, 6])
def test_embedding_lookup_backward_matches_nn_embedding(dim):
    from training.models.layers.embedding import _Lookup

    torch.manual_seed(0)
    table = torch.nn.Embedding(50, dim).double()
    ids = torch.randint(0, 50, (64, 7))  # repeated ids: their gradients must add up
    assert torch.autograd.gradcheck(lambda w: _Lookup.apply(w, ids[:4]), (table.weight,))
    grad = torch.randn(64, 7, dim, dtype=torch.float64)
    out = _Lookup.apply(table.weight, ids)
    assert torch.equal(out, table(ids))
    mine = torch.autograd.grad(out, table.weight, grad)[0]
    plain = torch.autograd.grad(table(ids), table.weight, grad)[0]
    torch.testing.assert_close(mine, plain)


@pytest.mark.parametrize("name", ["FM", "WideDeep", "xDeepFM"])
def test_fast_training_paths_give_the_plain_gradients(name, mixed_data, monkeypatch):
    """The CPU training shortcuts (scatter-add embedding backward, ...) against plain autograd, same weights."""
    import training.models.layers.embedding as embedding

    spec, train, _ = mixed_data
    inputs, _ = next(TensorSplit.from_frame("train", spec, train).batches(64))
    model = build(name, spec).double().eval()  # eval: no dropout draws, the two passes see the same function
    grads = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(embedding, "lookup", lambda table, ids: table(ids))
        model.zero_grad()
        model({k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)


def test_cin_first_layer_over_distinct_pairs_equals_the_full_outer_product():
    from training.models.ctr.xdeepfm import CompressedInteractionNet

    torch.manual_seed(0)
    cin = CompressedInteractionNet(5, (6, 4)).double()
    x0 = torch.randn(8, 5, 3, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for grad_path in (True, False):
        cin.zero_grad()
        x0.grad = None
        if grad_path:
            out = cin(x0)  # first layer over the 15 distinct pairs
        else:
            with torch.no_grad():  # the plain layer's output...
                outs.append(cin(x0))
            cin.first_layer_pairs = lambda base: cin.compress[0](  # ...and its gradients through autograd
                (base.unsqueeze(2) * base.unsqueeze(1)).reshape(base.shape[0], -1)
            )
            out = cin(x0)
        out.sum().backward()
        outs.append(out.detach())
        grads.append([x0.grad.clone(), *(p.grad.clone() for p in cin.parameters())])
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])
    for mine, plain in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(mine, plain)
