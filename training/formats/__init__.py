"""Loaders of the public audio-caption datasets in their published layouts (AudioCaps, Clotho,
WavCaps) and the record they share (:mod:`training.formats.common`). Dispatch by format:
:func:`training.datasets.load_dataset`."""
