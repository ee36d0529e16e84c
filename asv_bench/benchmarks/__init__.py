"""xkern's asv suite.

asv's "existing" environment installs nothing, and asv 0.6.6 drops PYTHONPATH (and
ASV_PYTHONPATH) before importing the suite; so when xkern is not installed, the
checkout this suite belongs to (two directories up) is put on sys.path.
"""
import importlib.util
import os
import sys

if importlib.util.find_spec("xkern") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
