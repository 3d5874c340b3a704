"""Model registry: paper name -> class. File name = class name = config key."""

from encore.errors import EncoreError
from training.models.base import CTRModel
from training.models.ctr.dcnv2 import DCNv2
from training.models.ctr.deepfm import DeepFM
from training.models.ctr.fm import FM
from training.models.ctr.lr import LR
from training.models.ctr.masknet import MaskNet

CTR_MODELS: dict[str, type[CTRModel]] = {
    "LR": LR,
    "FM": FM,
    "DeepFM": DeepFM,
    "DCNv2": DCNv2,
    "MaskNet": MaskNet,
}


def get_ctr_model(name: str) -> type[CTRModel]:
    if name not in CTR_MODELS:
        raise EncoreError(f"unknown model {name!r}; known models: {', '.join(CTR_MODELS)}")
    return CTR_MODELS[name]
