"""Command-line tools behind `python -m xkern`; see xkern/__main__.py."""
