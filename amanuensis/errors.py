"""One error hierarchy: what the user can fix is told in one line, everything else is a bug.

``UserError`` (bad input, options, missing files or calibrations, unusable devices) carries a
message written for the person who ran the command; the CLI prints it on one line and exits
non-zero. Any other exception is a defect in Amanuensis and keeps its traceback. ``UserError``
is also a ``ValueError`` so that callers who catch that keep working.
"""

from __future__ import annotations


class AmanuensisError(Exception):
    """Base of every error Amanuensis raises on purpose."""


class UserError(AmanuensisError, ValueError):
    """Something the user gave or asked for cannot be used; the message says what and why."""


class OptionsError(UserError):
    """An option value (decoding, streaming, device, quantization) outside what it accepts."""
