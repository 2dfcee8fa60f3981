"""Layers and models: backbones, heads over a layout's output units, DHP-Softmax."""

from lifelong.nn.dhp import DHPSoftmax
from lifelong.nn.heads import MultiHead, SingleHead
from lifelong.nn.model import ContinualModel, ModelConfig, build_model

__all__ = ["ContinualModel", "DHPSoftmax", "ModelConfig", "MultiHead", "SingleHead",
           "build_model"]
