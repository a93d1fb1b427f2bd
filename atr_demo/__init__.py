"""atr-demo: audio-text retrieval with optimal transport (m-LTM)."""

__version__ = "0.1.0"
