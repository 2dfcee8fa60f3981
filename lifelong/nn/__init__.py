"""Layers and models: backbones, heads over a layout's output units, DHP-Softmax, BiC's
bias-corrected layer, the nearest-mean-of-exemplars classifier."""

from lifelong.nn.bias import BiasCorrectedLinear
from lifelong.nn.dhp import DHPSoftmax
from lifelong.nn.heads import MultiHead, SingleHead
from lifelong.nn.model import ContinualModel, ModelConfig, build_model
from lifelong.nn.nme import NMEClassifier, classifying

__all__ = ["BiasCorrectedLinear", "ContinualModel", "DHPSoftmax", "ModelConfig", "MultiHead",
           "NMEClassifier", "SingleHead", "build_model", "classifying"]
