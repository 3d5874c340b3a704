"""The vectorized interactions of FFM, AFM, NFM and DCN against their textbook pairwise/per-layer definitions."""

from pathlib import Path

import pytest
import torch

from training.data import TensorSplit
from training.models.ctr.afm import AFM
from training.models.ctr.dcn import DCN, CrossNet
from training.models.ctr.ffm import FFM
from training.models.layers import bi_interaction, fm_interaction


@pytest.fixture(scope="module")
def batch(mixed_data):
    spec, train, _ = mixed_data
    inputs, _ = next(TensorSplit.from_frame("train", spec, train).batches(64))
    return spec, inputs


def test_bi_interaction_is_the_sum_of_pairwise_products_and_fm_its_total():
    emb = torch.randn(5, 4, 3, dtype=torch.float64)
    expected = sum(emb[:, i] * emb[:, j] for i in range(4) for j in range(i + 1, 4))
    torch.testing.assert_close(bi_interaction(emb), expected)
    torch.testing.assert_close(fm_interaction(emb), expected.sum(1, keepdim=True))


def test_ffm_pairs_use_each_fields_vector_for_the_other_field(batch):
    spec, inputs = batch
    torch.manual_seed(0)
    model = FFM(spec, embedding_dim=3).eval()
    for p in model.parameters():  # away from the tiny initial values so a wrong pairing shows
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        n = model.embedding.num_fields
        emb = model.embedding(inputs).view(-1, n, n - 1, 3)  # field f's vector for partner g: slot g - (g > f)
        expected = model.linear(inputs).squeeze(1)
        for i in range(n):
            for j in range(i + 1, n):
                expected = expected + (emb[:, i, j - 1] * emb[:, j, i]).sum(-1)
        torch.testing.assert_close(model(inputs), expected, rtol=1e-4, atol=1e-4)
    assert n == 6 and model.embedding.dense["audio"][-1].out_features == (n - 1) * 3  # content is field-aware too


def test_afm_with_flat_attention_pools_the_mean_product_and_without_attention_is_fm(batch):
    spec, inputs = batch
    torch.manual_seed(0)
    model = AFM(spec, embedding_dim=4, attention_dim=5).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        model.attention[2].weight.zero_()  # equal scores -> softmax gives every pair 1/P
        emb = model.embedding(inputs)
        n = emb.shape[1]
        pooled = bi_interaction(emb) / (n * (n - 1) / 2)
        expected = (model.linear(inputs) + model.projection(pooled)).squeeze(1)
        torch.testing.assert_close(model(inputs), expected, rtol=1e-4, atol=1e-4)  # float32 sums in other orders
        model.use_attention = False
        fm = (model.linear(inputs) + fm_interaction(emb)).squeeze(1)
        torch.testing.assert_close(model(inputs), fm, rtol=1e-4, atol=1e-4)


def test_cross_network_follows_the_per_layer_formula():
    torch.manual_seed(0)
    net = CrossNet(6, 3)
    torch.nn.init.normal_(net.biases)
    x0 = torch.randn(8, 6)
    x = x0
    for layer in range(3):
        w, b = net.weights[layer].weight[0], net.biases[layer]
        x = x0 * (x @ w).unsqueeze(1) + b + x
    torch.testing.assert_close(net(x0), x)


def test_dcn_without_hidden_units_is_the_cross_network_alone(batch):
    spec, inputs = batch
    model = DCN(spec, embedding_dim=4, hidden_units=()).eval()
    assert model.mlp is None and model.fc.in_features == model.embedding.num_fields * 4
    assert model(inputs).shape == (64,)


def test_every_frappe_config_entry_builds_its_registered_model(tmp_path):
    """A typo in a BARS hyper-parameter name must fail here, not after the real data has loaded."""
    import json

    from encore.schema import FeatureSpec
    from tests.factories import write_frappe_like
    from training.datasets.registry import load_dataset
    from training.models.registry import get_ctr_model
    from training.trainer import TrainConfig

    write_frappe_like(tmp_path, n_train=200, n_eval=50)
    data = load_dataset("frappe", tmp_path, "all", "none")
    spec = FeatureSpec.fit(data.train, data.fields, label=data.label)
    inputs, _ = next(TensorSplit.from_frame("train", spec, data.train).batches(64))
    config = json.loads((Path(__file__).parents[2] / "training" / "configs" / "frappe.json").read_text())
    for name, entry in config["models"].items():
        model = get_ctr_model(name)(spec, **entry.get("model", {})).eval()
        TrainConfig(**{**config["train"], **entry.get("train", {})})
        assert model(inputs).shape == (64,), name
        assert 0.9 < entry.get("bars_test_auc", 0.95) < 1.0, name  # an AUC, where BARS publishes one


def test_afm_attention_backward_equals_autograds_of_the_plain_modules(monkeypatch):
    from training.models.ctr.afm import _AttentionScores, attention_scores

    monkeypatch.setattr(_AttentionScores, "CHUNK", 3)  # several row chunks, the last one short
    torch.manual_seed(0)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b1 = torch.randn(5, dtype=torch.float64, requires_grad=True)  # some pre-activations negative: the ReLU mask
    w2 = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_AttentionScores.apply, (x, w1, b1, w2))

    attention = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1, bias=False), torch.nn.Softmax(dim=1)
    ).double()
    products = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 5, 1, dtype=torch.float64)
    params = (products, *attention.parameters())
    mine = torch.autograd.grad(attention_scores(attention, products), params, grad)
    plain = torch.autograd.grad(attention[2](attention[1](attention[0](products))), params, grad)
    for got, want in zip(mine, plain, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():  # inference takes the plain modules
        torch.testing.assert_close(attention_scores(attention, products), attention[2](attention[0](products).relu()))
