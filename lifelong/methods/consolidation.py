"""Synaptic consolidation recipes: EWC, online EWC, SI, MAS, MAS-local (being written)."""
