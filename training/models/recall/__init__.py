"""Recall (candidate retrieval) models: user and item vectors scored by a dot product.

`RECALL_MODELS` is the registry; the trainer builds each through `build_recall_model` (the graph models need the
training graph, the content models their content).
"""

from training.models.recall.base import RecallModel, bpr_loss
from training.models.recall.bpr import BPR
from training.models.recall.freedom import FREEDOM
from training.models.recall.lgmrec import LGMRec
from training.models.recall.vbpr import VBPR

RECALL_MODELS: dict[str, type[RecallModel]] = {"BPR": BPR, "VBPR": VBPR, "FREEDOM": FREEDOM, "LGMRec": LGMRec}
CONTENT_MODELS = ("VBPR", "FREEDOM", "LGMRec")  # need at least one content modality to be built

__all__ = ["BPR", "CONTENT_MODELS", "FREEDOM", "LGMRec", "RECALL_MODELS", "RecallModel", "VBPR", "bpr_loss"]
