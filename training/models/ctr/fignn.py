"""FiGNN (Li et al., 2019): fields are nodes of a fully connected graph; attention-weighted message passing
over field embeddings, then an attentional readout."""

import torch
from torch import nn
from torch.nn import functional as F

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import FeatureEmbedding


class GraphLayer(nn.Module):
    """a_i = W_in[i] (sum_j g_ij W_out[j] h_j) + b: one input and one output matrix per field (node).

    Node states are field-major, h: (F, B, D), so the per-field matrices are F GEMMs over the batch instead
    of B*F tiny matrix products; the aggregation over neighbours runs batch-major, one (F, F) @ (F, D)
    product per row, since the edge weights g: (B, F, F) differ per row. Swapping the two leading axes
    between them moves whole D-float rows. (A broadcast product over (F, F, D, B) instead made the whole
    training step 4.5x slower at the synthetic grid's widths.)
    """

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.w_out = nn.Parameter(torch.empty(num_fields, dim, dim))
        nn.init.xavier_normal_(self.w_in)
        nn.init.xavier_normal_(self.w_out)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, graph: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h_out = torch.bmm(h, self.w_out.transpose(1, 2))  # (F, B, D): row h_j @ W_out[j]^T
        aggregated = torch.bmm(graph, h_out.transpose(0, 1))  # (B, F_i, D)
        return torch.bmm(aggregated.transpose(0, 1), self.w_in.transpose(1, 2)) + self.bias  # (F, B, D)


class FiGNN(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 10,
        gnn_layers: int = 3,
        use_residual: bool = True,
        use_gru: bool = True,
        reuse_graph_layer: bool = False,
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        n_fields = self.embedding.num_fields
        self.num_layers, self.use_residual = gnn_layers, use_residual
        n_graph_layers = 1 if reuse_graph_layer else gnn_layers
        self.graph_layers = nn.ModuleList(GraphLayer(n_fields, embedding_dim) for _ in range(n_graph_layers))
        self.gru = nn.GRUCell(embedding_dim, embedding_dim) if use_gru else None  # torch's init, as FuxiCTR
        # Edge attention: leaky_relu(w . [e_i; e_j]), one w over the concatenated pair.
        self.edge_attention = nn.Linear(2 * embedding_dim, 1, bias=False)
        self.register_buffer("self_loops", torch.eye(n_fields, dtype=torch.bool), persistent=False)
        # Attentional readout: per-node score, weighted by a sigmoid gate computed from all nodes.
        self.node_score = nn.Linear(embedding_dim, 1, bias=False)
        self.node_gate = nn.Linear(n_fields * embedding_dim, n_fields, bias=False)
        self.init_weights()

    def edge_weights(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, F, D) -> (B, F, F): softmax over j of the attention of edge i <- j, no self-loops."""
        w = self.edge_attention.weight.view(2, -1)
        w_src, w_dst = w[0], w[1]
        # w . [e_i; e_j] = w_src . e_i + w_dst . e_j: F*F pair scores from 2*F dot products.
        alpha = F.leaky_relu((emb @ w_src).unsqueeze(2) + (emb @ w_dst).unsqueeze(1), negative_slope=0.01)
        return torch.softmax(alpha.masked_fill(self.self_loops, float("-inf")), dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        graph = self.edge_weights(emb)  # (B, F_i, F_j)
        emb_fm = emb.transpose(0, 1)  # field-major (F, B, D), see GraphLayer
        h = emb_fm
        for i in range(self.num_layers):
            a = self.graph_layers[0 if len(self.graph_layers) == 1 else i](graph, h)
            if self.gru is not None:  # the GRU updates every (field, row) state: (F*B, D)
                h = self.gru(a.reshape(-1, a.shape[-1]), h.reshape(-1, h.shape[-1])).view_as(a)
            else:
                h = a + h
            if self.use_residual:
                h = h + emb_fm
        h = h.transpose(0, 1)  # (B, F, D)
        score = self.node_score(h).squeeze(-1)  # (B, F)
        gate = torch.sigmoid(self.node_gate(h.flatten(1)))  # (B, F)
        return (gate * score).sum(dim=1)
