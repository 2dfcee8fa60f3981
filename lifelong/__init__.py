"""lifelong: continual (lifelong) learning with PyTorch.

Nothing happens on import beyond defining names; see the README for the API and the CLI.
"""

__version__ = "0.1.0"
