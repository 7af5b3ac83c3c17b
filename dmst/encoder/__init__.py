"""The audio encoder: hears a raw vocal, predicts console settings (see :mod:`dmst.schema`)."""
from .features import SAMPLE_RATE, SEGMENT_SECONDS
from .model import DmstModel, ModelError, load_model, read_checkpoint, model_from_checkpoint
from .network import Encoder

__all__ = ["DmstModel", "Encoder", "ModelError", "SAMPLE_RATE", "SEGMENT_SECONDS", "load_model", "model_from_checkpoint", "read_checkpoint"]
