"""DHP-Softmax recipe (being written)."""
