"""Exception types of atr-demo.

Every error a user can cause (bad audio, bad text, bad checkpoint, bad config) is raised as a
subclass of :class:`ATRError` with a message that says what is wrong and what to do, so that the
CLI and the app can show it instead of a traceback.
"""

from __future__ import annotations


class ATRError(Exception):
    """Base class of every user-facing error raised by atr-demo."""


class AudioError(ATRError):
    """The audio input cannot be used (base class of the audio errors)."""


class AudioDecodeError(AudioError):
    """The file is not decodable audio: empty, truncated, corrupt or an unsupported format."""


class EmptyAudioError(AudioError):
    """The audio decodes but holds no samples."""


class InvalidAudioError(AudioError):
    """The samples are unusable: NaN/inf values, too many channels or an unsupported rate."""


class AudioTooLongError(AudioError):
    """The clip is longer than the configured maximum duration."""


class TextInputError(ATRError):
    """A text query is empty or otherwise unusable."""


class LimitError(ATRError):
    """A request is over a configured bound (files, prompts, upload size, k); the message states the bound."""


class CheckpointError(ATRError):
    """A checkpoint is missing, malformed, or does not match its config (names the key)."""


class ConfigError(ATRError):
    """A config file or value is malformed or unknown."""


class DataError(ConfigError):
    """A dataset on disk cannot be used as given: a missing CSV column, a duplicate id, an empty
    split, an unreadable clip, or an evaluation split without the protocol's caption count."""


class InputFileError(ConfigError):
    """A user-given non-audio file (labels list, gallery metadata, output path) cannot be read or written."""


class SearchIndexError(ATRError):
    """A search index is missing, damaged, or was built by another model (says how to rebuild it)."""
