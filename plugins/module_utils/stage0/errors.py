"""Exceptions of the runtime library.

Every error a user can cause is a RocketError whose message names what was wrong (the
field, the archive member, the image, the pod) so modules can show it as it is.
"""
TYPE_CHECKING = False  # typing costs milliseconds at start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Optional


class RocketError(Exception):
    """Base of every error the library raises on purpose."""


class ValidationError(RocketError, ValueError):
    """A document or value does not follow the appc spec.

    ``path`` is the field path (``app.environment[2].name``), ``value`` the offending value.
    """

    def __init__(self, path: str, value: "Any", message: str) -> None:
        self.path = path
        self.value = value
        self.reason = message
        super().__init__(f"{path}: {_show(value)} {message}" if path else f"{_show(value)} {message}")


class ImageError(RocketError):
    """An image archive is unreadable, malformed or hostile."""


class StoreError(RocketError):
    """The store cannot do what was asked (format, locking, disk)."""


class NotFoundError(RocketError, LookupError):
    """No image, tree or pod matches what was asked for."""


class AmbiguousError(RocketError, LookupError):
    """A prefix or name matches several candidates; ``candidates`` lists them."""

    def __init__(self, message: str, candidates: "Optional[list]" = None) -> None:
        self.candidates = list(candidates or [])
        super().__init__(message)


class TimedOut(RocketError):
    """A command given a time limit did not finish within it (and was killed)."""


class InUseError(RocketError):
    """A resource is used by a pod (or locked by another process) and cannot be removed."""


def _show(value: "Any") -> str:
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 200:
        text = text[:197] + "..."
    return text
