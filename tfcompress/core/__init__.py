"""Machinery shared by every technique: wrapper, training step, cloning."""

from tfcompress.core import steps
from tfcompress.core.clone import copy_layer, is_graph_model, map_layers
from tfcompress.core.wrapper import WeightWrapper

__all__ = ["WeightWrapper", "copy_layer", "is_graph_model", "map_layers", "steps"]
