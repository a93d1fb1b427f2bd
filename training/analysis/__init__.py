"""Research analyses of trained models, used by the training commands (``evaluate``,
``analyse``, ``experiments``), not by the library or the app.

* :mod:`training.analysis.leakage`: which ESC-50 classes training captions name, zero-shot
  accuracy split into seen and unseen classes, and the linear-probe baseline.
* :mod:`training.analysis.structure`: how alike two paired embedding spaces are (k-NN graph
  overlap, linear CKA).
"""
