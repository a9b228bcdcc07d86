"""Fetching an image URL without letting a product event reach inside our network (SSRF).

`SafeFetcher` owns the network side: it resolves each host itself, checks every address with
`policy`, connects to that very address (so a second DNS answer cannot swap in another one),
sends the real Host header and, for https, the real SNI name and certificate check. Redirects
are followed by hand and every hop is checked again. One deadline covers the whole fetch,
DNS and redirects included, and the body is capped in bytes.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from shopvec.imaging.errors import ForbiddenUrl, ImageTooLarge, ImageUnreachable
from shopvec.imaging.policy import (
    IPAddress,
    Target,
    address_refusal,
    display_url,
    host_allowed,
    parse_target,
)
from shopvec.settings import ImageFetchSettings

__all__ = ["Resolver", "SafeFetcher", "system_resolver"]

Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> IP addresses as text. Blocking calls are fine: the fetcher bounds them."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_SIZE = 64 * 1024
_HEADERS = {
    "User-Agent": "shopvec-image-fetcher/0.1",
    "Accept": "image/*",
    "Connection": "close",
}


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), addresses in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SafeFetcher:
    """Fetches http(s) URLs under `ImageFetchSettings`; safe to share between threads.

    `resolver` replaces the system resolver and `ssl_context` the default trust store, for
    tests and for on-premises CDNs behind a private CA.
    """

    def __init__(
        self,
        settings: ImageFetchSettings,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver or system_resolver
        self._ssl_context = ssl_context or ssl.create_default_context()

    def fetch(self, url: str) -> bytes:
        """The body of a 200 answer; raises ForbiddenUrl, ImageUnreachable or ImageTooLarge."""
        deadline = time.monotonic() + self._settings.timeout_s
        current = url
        for hop in range(self._settings.max_redirects + 1):
            via = "" if hop == 0 else f" (redirected from {display_url(url)})"
            target = self._check(current, via)
            addresses = self._resolve(target, deadline, via)
            answer = self._exchange(target, addresses, deadline, via)
            if not isinstance(answer, _Redirect):
                return answer
            current = answer.location
        raise ImageUnreachable(
            f"could not fetch {display_url(url)}: more than {self._settings.max_redirects} "
            f"redirects (the last one pointed to {display_url(current)})"
        )

    def _check(self, url: str, via: str) -> Target:
        try:
            target = parse_target(url)
        except ForbiddenUrl as exc:
            raise ForbiddenUrl(exc.message + via) from None
        allow = self._settings.allow_hosts
        if not host_allowed(target.host, allow):
            raise ForbiddenUrl(
                f"refused to fetch {display_url(url)}{via}: the host {target.host} is not in "
                f"the allowed image hosts ({', '.join(allow)})"
            )
        return target

    def _resolve(self, target: Target, deadline: float, via: str) -> list[IPAddress]:
        if target.literal is not None:
            addresses = [target.literal]
        else:
            answer = _before_deadline(
                lambda: self._resolver(target.host, target.port),
                deadline,
                on_timeout=lambda: self._timed_out(target, via, "resolving the host"),
            )
            if isinstance(answer, BaseException):
                raise ImageUnreachable(
                    f"could not fetch {display_url(target.url)}{via}: the host {target.host} "
                    f"could not be resolved ({answer})"
                )
            try:
                addresses = [ipaddress.ip_address(a) for a in answer]
            except ValueError as exc:
                raise ImageUnreachable(
                    f"could not fetch {display_url(target.url)}{via}: the resolver gave a bad "
                    f"address for {target.host} ({exc})"
                ) from None
            if not addresses:
                raise ImageUnreachable(
                    f"could not fetch {display_url(target.url)}{via}: the host {target.host} "
                    "has no addresses"
                )
        if not self._settings.allow_private_networks:
            # One bad answer refuses the host: a name that mixes public and internal addresses
            # is how DNS rebinding and split-horizon tricks look.
            for address in addresses:
                reason = address_refusal(address)
                if reason is not None:
                    what = (
                        target.host
                        if target.literal is not None
                        else f"{target.host} resolves to {address}, which"
                    )
                    raise ForbiddenUrl(
                        f"refused to fetch {display_url(target.url)}{via}: {what} is {reason}; "
                        "image URLs must point to the public internet"
                    )
        return addresses

    def _exchange(
        self, target: Target, addresses: list[IPAddress], deadline: float, via: str
    ) -> bytes | _Redirect:
        tls = self._ssl_context if target.scheme == "https" else None
        conn = _PinnedConnection(target, addresses, deadline, tls)
        shown = f"{display_url(target.url)}{via}"
        try:
            conn.request("GET", target.request_target, headers=_HEADERS)
            response = conn.getresponse()
            try:
                return self._answer(target, response, deadline, shown)
            finally:
                response.close()
        except TimeoutError:
            raise self._timed_out(target, via, "waiting for the server") from None
        except ssl.SSLCertVerificationError as exc:
            raise ImageUnreachable(
                f"could not fetch {shown}: the TLS certificate of {target.netloc} is not valid "
                f"({exc.verify_message})"
            ) from None
        except ssl.SSLError as exc:
            raise ImageUnreachable(
                f"could not fetch {shown}: TLS with {target.netloc} failed ({exc.reason})"
            ) from None
        except http.client.IncompleteRead as exc:
            raise ImageUnreachable(
                f"could not fetch {shown}: the connection closed after {len(exc.partial)} bytes, "
                f"{exc.expected} short of the announced length"
            ) from None
        except http.client.HTTPException as exc:
            raise ImageUnreachable(
                f"could not fetch {shown}: the answer from {target.netloc} is not valid HTTP "
                f"({type(exc).__name__}: {exc})"
            ) from None
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise self._timed_out(target, via, "waiting for the server") from None
            raise ImageUnreachable(
                f"could not fetch {shown}: network error with {target.netloc} "
                f"({exc.strerror or exc})"
            ) from None
        finally:
            conn.release()

    def _answer(
        self, target: Target, response: http.client.HTTPResponse, deadline: float, shown: str
    ) -> bytes | _Redirect:
        if response.status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise ImageUnreachable(
                    f"could not fetch {shown}: the server answered {response.status} "
                    "(a redirect) without saying where to"
                )
            return _Redirect(urljoin(target.url, location.strip()))
        if response.status != 200:
            raise ImageUnreachable(
                f"could not fetch {shown}: the server answered {response.status} "
                f"{response.reason}".rstrip()
            )
        limit = self._settings.max_bytes
        announced = response.length
        if announced is not None and announced > limit:
            raise ImageTooLarge(
                f"{shown}: the image is {announced:,} bytes; the limit is {limit:,} bytes"
            )
        body = bytearray()
        while chunk := response.read1(_READ_SIZE):
            body += chunk
            if len(body) > limit:
                raise ImageTooLarge(
                    f"{shown}: the image is more than {limit:,} bytes (the limit); "
                    "stopped reading there"
                )
        # read1, unlike read, returns quietly when the server hangs up early.
        if announced is not None and len(body) < announced:
            raise http.client.IncompleteRead(bytes(body), announced - len(body))
        return bytes(body)

    def _timed_out(self, target: Target, via: str, doing: str) -> ImageUnreachable:
        return ImageUnreachable(
            f"could not fetch {display_url(target.url)}{via}: gave up {doing} after "
            f"{self._settings.timeout_s:g} s (the limit for the whole fetch, redirects included)"
        )


@dataclass(frozen=True)
class _Redirect:
    location: str


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to addresses already checked, never to what the name resolves to
    later. http.client still writes the Host header from the URL's host and port."""

    def __init__(
        self,
        target: Target,
        addresses: list[IPAddress],
        deadline: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(target.host, target.port)
        # Host carries the port only when it differs from the scheme's own.
        self.default_port = 443 if tls is not None else 80
        self._server_name = target.host
        self._addresses = addresses
        self._deadline = deadline
        self._tls = tls
        self._raw: socket.socket | None = None

    def connect(self) -> None:
        raw = self._open_tcp()
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                raw.settimeout(_remaining(self._deadline))
                raw = self._tls.wrap_socket(raw, server_hostname=self._server_name)
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        # http.client only calls sendall, makefile and close on it, which the stand-in has.
        self.sock = _DeadlineSocket(raw, self._deadline)

    def release(self) -> None:
        """Closes the socket; http.client's own close() may run before the body is read."""
        self.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _open_tcp(self) -> socket.socket:
        error: OSError | None = None
        for address in self._addresses:
            try:
                return socket.create_connection(
                    (str(address), self.port), timeout=_remaining(self._deadline)
                )
            except TimeoutError:
                raise
            except OSError as exc:
                error = exc
        assert error is not None
        raise error


class _DeadlineSocket:
    """Stands in for the socket http.client holds: each send and receive gets only the time
    left before the fetch's deadline, so a server trickling a byte at a time cannot stretch it.
    Closing is left to `_PinnedConnection.release`."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: Any) -> None:
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        pass


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch deadline passed")
    return left


def _before_deadline(
    call: Callable[[], Sequence[str]],
    deadline: float,
    on_timeout: Callable[[], Exception],
) -> Sequence[str] | BaseException:
    """Runs a call that has no timeout of its own (getaddrinfo) on a daemon thread and stops
    waiting at the deadline; a stuck resolver then costs a parked thread, not the consumer."""
    outcome: list[Sequence[str] | BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="shopvec-image-dns", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.0))
    if not outcome:
        raise on_timeout()
    return outcome[0]
