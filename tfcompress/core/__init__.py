"""Machinery shared by every technique: wrapper, chain, steps, traversal, strip, registry."""

from tfcompress.core import channels, rules, settings, steps, techniques
from tfcompress.core.clone import copy_layer
from tfcompress.core.graph import Graph, find, is_graph_model, map_layers, rewrite
from tfcompress.core.strip import strip
from tfcompress.core.shrink import shrink
from tfcompress.core.summaries import CompressionSummaries, Section, Summaries
from tfcompress.core.techniques import Stage, Technique, register
from tfcompress.core.wrapper import WeightWrapper

__all__ = ["CompressionSummaries", "Graph", "Section", "Stage", "Summaries", "Technique",
           "WeightWrapper", "copy_layer", "find", "is_graph_model", "map_layers", "register",
           "rewrite", "rules", "settings", "shrink", "steps", "strip", "techniques", "channels"]
