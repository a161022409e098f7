"""Errors of the state layer, refining :class:`weirflow.errors.StateError`."""

from __future__ import annotations

from weirflow.errors import StateError, UnsupportedFormatVersionError


class CorruptStateError(StateError):
    """A state blob fails its checksum, has a broken header, or does not decode."""


class UnsupportedStateVersionError(StateError, UnsupportedFormatVersionError):
    """A state blob carries a format version this build cannot read.

    It is both a :class:`StateError` and an
    :class:`~weirflow.errors.UnsupportedFormatVersionError`, so callers catching
    either family see it.
    """
