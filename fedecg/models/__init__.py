"""fedecg.models: the ECG encoder, clinical encoder, heads, joint model and model files."""

from fedecg.models.classifier import EcgClassifier, crop_starts
from fedecg.models.clinical import ClinicalEncoder
from fedecg.models.encoders import EcgEncoder, make_norm
from fedecg.models.io import ModelCard, load_inference_model, save_inference_model
from fedecg.models.joint import JointModel

__all__ = ["ClinicalEncoder", "EcgClassifier", "EcgEncoder", "JointModel", "ModelCard",
           "crop_starts", "load_inference_model", "make_norm", "save_inference_model"]
