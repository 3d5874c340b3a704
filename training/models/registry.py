"""Model registry: paper name -> class. File name = class name = config key."""

from encore.errors import EncoreError
from training.models.base import CTRModel
from training.models.ctr.afm import AFM
from training.models.ctr.dcn import DCN
from training.models.ctr.dcnv2 import DCNv2
from training.models.ctr.deepfm import DeepFM
from training.models.ctr.eulernet import EulerNet
from training.models.ctr.ffm import FFM
from training.models.ctr.fignn import FiGNN
from training.models.ctr.finalmlp import FinalMLP
from training.models.ctr.fm import FM
from training.models.ctr.lr import LR
from training.models.ctr.masknet import MaskNet
from training.models.ctr.nfm import NFM
from training.models.ctr.widedeep import WideDeep
from training.models.ctr.wukong import WuKong
from training.models.ctr.xdeepfm import xDeepFM

CTR_MODELS: dict[str, type[CTRModel]] = {
    "LR": LR,
    "FM": FM,
    "DeepFM": DeepFM,
    "DCNv2": DCNv2,
    "MaskNet": MaskNet,
    "FFM": FFM,
    "AFM": AFM,
    "WideDeep": WideDeep,
    "NFM": NFM,
    "DCN": DCN,
    "xDeepFM": xDeepFM,
    "FiGNN": FiGNN,
    "FinalMLP": FinalMLP,
    "EulerNet": EulerNet,
    "WuKong": WuKong,
}


def get_ctr_model(name: str) -> type[CTRModel]:
    if name not in CTR_MODELS:
        raise EncoreError(f"unknown model {name!r}; known models: {', '.join(CTR_MODELS)}")
    return CTR_MODELS[name]
