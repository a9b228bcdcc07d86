"""What may be fetched: the shape of an image URL, the host allow-list, and the addresses a host
may resolve to. Pure functions, no I/O; `fetch` applies them to every hop.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from shopvec.imaging.errors import ForbiddenUrl

__all__ = [
    "IPAddress",
    "Target",
    "address_refusal",
    "display_url",
    "host_allowed",
    "parse_target",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_URL_CHARS = 8192
_MAX_DISPLAY_CHARS = 300
# Control characters are refused rather than cleaned: urlsplit silently drops tabs and newlines,
# so what we checked would not be what a lenient server or proxy sees.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
# Keeps reserved characters and existing %-escapes; encodes spaces and non-ASCII, which
# catalogues do send and which http.client would otherwise refuse.
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """One URL, checked for shape and split into what a connection needs."""

    url: str
    scheme: str
    host: str
    """Lower-case ASCII (IDNA) without a trailing dot; an IP literal without brackets."""
    port: int
    request_target: str
    """Path and query, percent-encoded, as sent on the request line."""
    literal: IPAddress | None
    """The address when the URL names an IP literal rather than a host name."""

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def display_url(url: str) -> str:
    """A URL as it may appear in an error message: without credentials or the query string
    (signed CDN URLs carry tokens there, and messages end up in logs), and not too long."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
        if parts.query:
            shown += "?…"
    except ValueError:
        shown = url
    shown = _CONTROL.sub("?", shown)
    if len(shown) > _MAX_DISPLAY_CHARS:
        shown = shown[: _MAX_DISPLAY_CHARS - 1] + "…"
    return shown


def parse_target(url: str) -> Target:
    """Checks the URL's shape (scheme, credentials, host, port); raises ForbiddenUrl."""

    def refuse(why: str) -> ForbiddenUrl:
        return ForbiddenUrl(f"refused to fetch {display_url(url)}: {why}")

    if len(url) > _MAX_URL_CHARS:
        raise refuse(f"the URL is longer than {_MAX_URL_CHARS} characters")
    if _CONTROL.search(url):
        raise refuse("the URL contains control characters (tabs, line breaks or similar)")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise refuse(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"'{scheme}'" if scheme else "none"
        raise refuse(f"only http and https URLs are fetched (the scheme is {shown})")
    if "@" in parts.netloc:
        raise refuse("URLs with a user name or password are not fetched; use a public URL")
    if not parts.hostname:
        raise refuse("the URL has no host")
    host, literal = _normalise_host(parts.hostname)
    if host is None:
        raise refuse(f"'{parts.hostname}' is not a valid host name")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=_DEFAULT_PORTS[scheme] if port is None else port,
        request_target=quote(target, safe=_PATH_SAFE),
        literal=literal,
    )


def host_allowed(host: str, allow_hosts: Sequence[str]) -> bool:
    """An empty list allows every host. `*.example.com` allows any name under example.com at
    any depth, but not example.com itself: list that separately."""
    if not allow_hosts:
        return True
    name, _ = _normalise_host(host)
    if name is None:
        return False
    for entry in allow_hosts:
        entry = entry.strip()
        if entry.startswith("*."):
            suffix, _ = _normalise_host(entry[2:])
            if suffix is not None and name.endswith("." + suffix):
                return True
        elif _normalise_host(entry)[0] == name:
            return True
    return False


def address_refusal(address: IPAddress) -> str | None:
    """Why a connection to this address is refused, or None when it is on the public internet.

    Addresses that embed an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96 and
    6to4 2002::/16) are judged by the IPv4 address they reach.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(embedded)
            return None if reason is None else f"{reason} (it embeds the IPv4 address {embedded})"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address, the range of cloud metadata services"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private network address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public internet address"
    return None


def _normalise_host(raw: str) -> tuple[str | None, IPAddress | None]:
    """(lower-case ASCII name, None), (compressed IP text, address) or (None, None) if invalid."""
    host = raw.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.rstrip(".")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return _ip_text(literal), literal
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None, None
    if not _HOST_NAME.match(ascii_host):
        return None, None
    return ascii_host, None


def _ip_text(address: IPAddress) -> str:
    # Python 3.11 writes ::ffff:127.0.0.1 as ::ffff:7f00:1, which nobody recognises.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)
