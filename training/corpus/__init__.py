"""Build the open sound-effects corpus from Debian game-data packages.

The entry point is :func:`training.corpus.build.main` (``python -m training build-corpus``).
Each source package has a small parser in :mod:`training.corpus.sources`; the reviewed
name → caption tables live next to this file in ``captions/<package>.csv``.
"""
