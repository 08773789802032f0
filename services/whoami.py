"""whoami: tell any client how echo saw it, as one line of text or over a minimal HTTP/1.1.

The line is `you are <peer> at <local>` with names as shared.names.format_name writes them (IPv6
in brackets; an IPv4 peer of echo's dual-stack socket is ::ffff:-mapped, as the kernel names it).
HTTP: one request per connection (`Connection: close`); the request line and headers must fit
MAX_HEAD bytes (431 otherwise), garbage gets 400, methods other than GET and HEAD get 405. The body
is JSON unless the Accept header prefers text/html (a browser: the line, escaped) or text/plain.
These are pure functions: echo's selector loop (services/echo.py) owns the sockets.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

from shared.names import Name, format_name, name_to_wire

MAX_HEAD = 8 * 1024
HEAD_END = b"\r\n\r\n"
REQUEST_LINE = re.compile(r"([A-Z]{1,16}) (\S{1,4096}) HTTP/(1\.[01])")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
JSON_TYPE, HTML_TYPE, TEXT_TYPE = "application/json", "text/html", "text/plain"
OFFERED = (JSON_TYPE, HTML_TYPE, TEXT_TYPE)  # in order of preference when the client weighs them alike
REASONS = {
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
}


@dataclass(frozen=True)
class Seen:
    """What echo's socket said about one client: the flow it reports under, and both names."""

    flow: str
    proto: str
    peer: Name | None
    local: Name | None

    def line(self) -> str:
        """The one line whoami answers with."""
        return f"you are {format_name(self.peer)} at {format_name(self.local)}\n"

    def to_json(self) -> dict[str, Any]:
        """The same facts for programs: names written for people and as the socket returned them."""
        return {
            "flow": self.flow,
            "proto": self.proto,
            "peer": format_name(self.peer),
            "local": format_name(self.local),
            "peername": name_to_wire(self.peer),
            "sockname": name_to_wire(self.local),
        }


class HttpError(ValueError):
    """A request whoami refuses, with the status that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class HttpRequest:
    """A parsed request head: its line and its headers (names lower-cased, repeats joined by commas)."""

    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def line(self) -> str:
        """The request line as sent."""
        return f"{self.method} {self.target} HTTP/{self.version}"


def parse_request(buffer: bytes) -> HttpRequest | None:
    """Read a request head; None until it is whole, HttpError (400 or 431) when it can never be served."""
    end = buffer.find(HEAD_END)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpError(431, f"no end of headers within {MAX_HEAD} bytes")
        if buffer and not buffer[:1].isalpha():
            raise HttpError(400, "not an HTTP request")
        return None
    if end + len(HEAD_END) > MAX_HEAD:
        raise HttpError(431, f"request head of {end + len(HEAD_END)} bytes exceeds {MAX_HEAD}")
    try:
        text = buffer[:end].decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    first, *lines = text.split("\r\n")
    matched = REQUEST_LINE.fullmatch(first)
    if matched is None:
        raise HttpError(400, f"bad request line {first[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or HEADER_NAME.fullmatch(name) is None:
            raise HttpError(400, f"bad header line {line[:80]!r}")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return HttpRequest(matched[1], matched[2], matched[3], headers)


def media_weights(accept: str) -> dict[str, float]:
    """An Accept header's media ranges and their q values (malformed q counts as 0)."""
    weights: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            weights[media.lower()] = quality
    return weights


def choose_type(accept: str | None) -> str:
    """The offered type the client weighs highest: an exact range beats type/* beats */*; ties go to JSON."""
    if not accept:
        return JSON_TYPE
    weights = media_weights(accept)

    def weight(offer: str) -> tuple[float, int]:
        for specificity, media in ((2, offer), (1, offer.split("/")[0] + "/*"), (0, "*/*")):
            if media in weights:
                return weights[media], specificity
        return 0.0, 0

    best = max(OFFERED, key=lambda offer: weight(offer)[0])
    return best if weight(best)[0] > 0 else JSON_TYPE


def render_body(seen: Seen, media: str) -> bytes:
    """The facts in the chosen type."""
    if media == HTML_TYPE:
        return f"<!doctype html><title>whoami</title><p>{html.escape(seen.line().strip())}</p>\n".encode()
    if media == TEXT_TYPE:
        return seen.line().encode()
    return (json.dumps(seen.to_json()) + "\n").encode()


def response(status: int, media: str, body: bytes, head_only: bool = False, extra: str = "") -> bytes:
    """An HTTP/1.1 response that closes the connection; HEAD gets the headers GET would."""
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\n"
        f"Content-Type: {media}; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\n{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else body)


def answer(request: HttpRequest, seen: Seen) -> tuple[int, bytes]:
    """The status and bytes whoami sends for a parsed request."""
    if request.method not in ("GET", "HEAD"):
        body = f"{request.method} is not allowed here\n".encode()
        return 405, response(405, TEXT_TYPE, body, extra="Allow: GET, HEAD\r\n")
    media = choose_type(request.headers.get("accept"))
    return 200, response(200, media, render_body(seen, media), head_only=request.method == "HEAD")


def refuse(error: HttpError) -> bytes:
    """The bytes for a request whoami cannot serve."""
    return response(error.status, TEXT_TYPE, f"{REASONS[error.status]}: {error}\n".encode())
