"""The one exception tree of ocsim.

    OcsimError                 base; carries the HTTP status it maps to and a short reason
    +-- PeerError              the other side's fault (4xx)
    |   +-- BadRequest         400 malformed input
    |   +-- Unauthorized       401 no or malformed credentials
    |   +-- Forbidden          403 credentials present but not good enough (or bad token)
    |   +-- NotFound           404
    |   +-- Conflict           409
    |   +-- PayloadTooLarge    413
    |   +-- UnsupportedMediaType 415 a body in a charset or type we do not take
    |   +-- RangeNotSatisfiable 416
    +-- OurError               our fault or our upstream's (5xx)
        +-- UpstreamError      502 the upstream answered badly or refused
        +-- UpstreamTimeout    504 the upstream did not answer in time
        +-- Unavailable        503 we are draining, or deliberately down

Services translate these to JSON `{"error": reason}` bodies; nothing else ever
reaches a client, so a bug shows up as a 500 with a short reason, never a traceback.
"""
from __future__ import annotations


class OcsimError(Exception):
    status: int = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PeerError(OcsimError):
    status = 400


class BadRequest(PeerError):
    status = 400


class Unauthorized(PeerError):
    status = 401


class Forbidden(PeerError):
    status = 403


class NotFound(PeerError):
    status = 404


class Conflict(PeerError):
    status = 409


class MethodNotAllowed(PeerError):
    status = 405


class PayloadTooLarge(PeerError):
    status = 413


class UriTooLong(PeerError):
    status = 414


class UnsupportedMediaType(PeerError):
    status = 415


class RangeNotSatisfiable(PeerError):
    status = 416


class OurError(OcsimError):
    status = 500


class UpstreamError(OurError):
    status = 502


class UpstreamTimeout(OurError):
    status = 504


class Unavailable(OurError):
    status = 503
