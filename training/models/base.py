"""Base of every CTR model: `forward(inputs) -> logits (B,)`; no loss, optimizer or device inside."""

import torch
from torch import nn

from encore.schema import FeatureSpec


class CTRModel(nn.Module):
    """Holds the spec the model was built from and initializes weights the way FuxiCTR/BARS do."""

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.spec = spec

    def init_weights(self) -> None:
        """Xavier-normal linear layers with zero bias; embeddings N(0, 1e-4), padding row zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1e-4)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def embedding_tables(self) -> list[torch.Tensor]:
        """Whole embedding tables, for the BARS L2 penalty lambda/2 * ||E||^2 on every batch."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
