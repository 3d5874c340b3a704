"""Recall (candidate retrieval) models: user and item vectors scored by a dot product.

`RECALL_MODELS` is the registry (paper name -> class). The trainer builds every model one way,
`RECALL_MODELS[name].build(inputs, dim, l2, **model_options)` (training/train_recall.py `build_model`): each class
takes from `RecallInputs` what it needs (the graph models the training graph, the content models the content).
"""

from training.models.recall.base import RecallInputs, RecallModel, bpr_loss
from training.models.recall.bpr import BPR
from training.models.recall.freedom import FREEDOM
from training.models.recall.lgmrec import LGMRec
from training.models.recall.vbpr import VBPR

RECALL_MODELS: dict[str, type[RecallModel]] = {"BPR": BPR, "VBPR": VBPR, "FREEDOM": FREEDOM, "LGMRec": LGMRec}
CONTENT_MODELS = tuple(name for name, cls in RECALL_MODELS.items() if cls.needs_content)  # need content to be built

__all__ = [
    "BPR",
    "CONTENT_MODELS",
    "FREEDOM",
    "LGMRec",
    "RECALL_MODELS",
    "RecallInputs",
    "RecallModel",
    "VBPR",
    "bpr_loss",
]
