"""SafeFetcher and its URL policy, against a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from shopvec.imaging import (
    ForbiddenUrl,
    ImageTooLarge,
    ImageUnreachable,
    SafeFetcher,
    address_refusal,
    display_url,
    host_allowed,
)
from shopvec.settings import ImageFetchSettings

BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # 1032 bytes; never decoded here
STOP = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen_hosts: list[str] = []  # noqa: RUF012 (shared on purpose: the tests read it)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen_hosts.append(self.headers.get("Host", ""))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            route = getattr(self, "route_" + parts.path.strip("/").split("/")[0], None)
            if route is None:
                self.send_plain(404, b"no such image")
            else:
                route(parts.path, query)
        except OSError:
            pass  # the client gave up, as several tests intend

    def send_plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def route_img(self, path: str, query: dict[str, str]) -> None:
        self.send_plain(200, BODY, {"Content-Type": "image/png"})

    def route_redirect(self, path: str, query: dict[str, str]) -> None:
        left = int(path.rsplit("/", 1)[1])
        if left == 0:
            self.route_img(path, query)
        else:
            self.send_plain(302, b"", {"Location": f"/redirect/{left - 1}"})

    def route_to(self, path: str, query: dict[str, str]) -> None:
        self.send_plain(301, b"", {"Location": query["u"]})

    def route_big(self, path: str, query: dict[str, str]) -> None:
        self.send_plain(200, b"x" * 5000)

    def route_chunked(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(8):
            self.wfile.write(b"200\r\n" + b"x" * 512 + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def route_short(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.close_connection = True

    def route_slowbody(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        self.trickle(b"x" * 1000)

    def route_slowheaders(self, path: str, query: dict[str, str]) -> None:
        self.trickle(b"HTTP/1.1 200 OK\r\n" + b"X-Padding: 1\r\n" * 100)

    def trickle(self, data: bytes) -> None:
        # Each byte comes well inside any per-read timeout; only a deadline over the whole
        # fetch stops it.
        for byte in data:
            if STOP.wait(0.02):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


class Server(http.server.ThreadingHTTPServer):
    # Handler threads are joined at server_close, so none outlives the tests.
    daemon_threads = False
    block_on_close = True


def serve(server: http.server.HTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        STOP.set()
        server.shutdown()
        server.server_close()
        thread.join()
        STOP.clear()


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    yield from serve(Server(("127.0.0.1", 0), Handler))


def fetcher(**overrides: object) -> SafeFetcher:
    settings = {"allow_private_networks": True, "max_bytes": 4096, "timeout_s": 2.0}
    return SafeFetcher(ImageFetchSettings.model_validate({**settings, **overrides}))


# --- the address and host policy, without connecting ---------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_refusal_names_the_metadata_range_and_the_mapped_address() -> None:
    assert "link-local" in (address_refusal(ipaddress.ip_address("169.254.169.254")) or "")
    reason = address_refusal(ipaddress.ip_address("::ffff:127.0.0.1")) or ""
    assert "loopback" in reason and "IPv4 address 127.0.0.1" in reason


def test_host_allow_list() -> None:
    allow = ["images.example.com", "*.cdn.example.net", "IMG.Example.org."]
    assert host_allowed("images.example.com", allow)
    assert host_allowed("img.example.org", allow)
    assert host_allowed("a.cdn.example.net", allow)
    assert host_allowed("a.b.cdn.example.net", allow)
    assert not host_allowed("cdn.example.net", allow)
    assert not host_allowed("evilcdn.example.net", allow)
    assert not host_allowed("images.example.com.evil.io", allow)
    assert not host_allowed("example.com", allow)
    assert host_allowed("anything.io", [])


def test_display_url_hides_query_and_credentials() -> None:
    shown = display_url("https://u:secret@cdn.example.com/a.jpg?X-Amz-Signature=abc")
    assert shown == "https://cdn.example.com/a.jpg?…"


# --- refusals before any connection --------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "gopher://127.0.0.1:70/_x",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "//example.com/a.jpg",
        "http://user:pw@example.com/a.jpg",
        "http:///a.jpg",
        "http://example.com:99999/a.jpg",
        "http://exa mple.com/a.jpg",
        "http://example.com/a\r\nX-Injected: 1",
    ],
)
def test_malformed_or_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenUrl) as caught:
        fetcher().fetch(url)
    assert caught.value.kind == "forbidden_url"


def test_loopback_is_refused_by_default(origin: str) -> None:
    with pytest.raises(ForbiddenUrl, match="loopback") as caught:
        fetcher(allow_private_networks=False).fetch(f"http://{origin}/img")
    assert origin in str(caught.value)


@pytest.mark.parametrize(
    "host",
    ["localhost", "127.1", "2130706433", "0x7f.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0"],
)
def test_other_spellings_of_this_machine_are_refused(host: str) -> None:
    with pytest.raises(ForbiddenUrl):
        fetcher(allow_private_networks=False).fetch(f"http://{host}:9/img")


def test_a_host_with_one_internal_address_among_public_ones_is_refused() -> None:
    plain = ImageFetchSettings()
    mixed = SafeFetcher(plain, resolver=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    with pytest.raises(ForbiddenUrl, match=r"resolves to 10\.1\.2\.3"):
        mixed.fetch("http://images.example.com/a.jpg")


def test_hosts_outside_the_allow_list_are_refused(origin: str) -> None:
    with pytest.raises(ForbiddenUrl, match="not in the allowed image hosts"):
        fetcher(allow_hosts=["*.cdn.example.com"]).fetch(f"http://{origin}/img")


# --- against the local server ---------------------------------------------------------------


def test_fetches_with_private_networks_allowed(origin: str) -> None:
    assert fetcher().fetch(f"http://{origin}/img") == BODY


def test_connects_to_the_checked_address_and_sends_the_real_host(origin: str) -> None:
    port = int(origin.rsplit(":", 1)[1])
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    settings = ImageFetchSettings(allow_private_networks=True)
    pinned = SafeFetcher(settings, resolver=resolver)
    assert pinned.fetch(f"http://images.shop.test:{port}/redirect/1") == BODY
    assert calls == ["images.shop.test"] * 2  # once per hop, never again for the connection
    assert Handler.seen_hosts[-1] == f"images.shop.test:{port}"


def test_follows_redirects_up_to_the_limit(origin: str) -> None:
    assert fetcher(max_redirects=2).fetch(f"http://{origin}/redirect/2") == BODY
    with pytest.raises(ImageUnreachable, match="more than 2 redirects"):
        fetcher(max_redirects=2).fetch(f"http://{origin}/redirect/3")
    with pytest.raises(ImageUnreachable, match="more than 0 redirects"):
        fetcher(max_redirects=0).fetch(f"http://{origin}/redirect/1")


def test_a_redirect_to_a_forbidden_address_is_refused(
    origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopvec.imaging import fetch as fetch_module

    # The test server is on loopback: let exactly that address through, so the first hop
    # connects and the redirect is judged by the real rules.
    real = fetch_module.address_refusal
    server = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(fetch_module, "address_refusal", lambda a: None if a == server else real(a))
    strict = fetcher(allow_private_networks=False)
    assert strict.fetch(f"http://{origin}/img") == BODY
    for target in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/a.jpg"):
        with pytest.raises(ForbiddenUrl, match="redirected from") as caught:
            strict.fetch(f"http://{origin}/to?u={target}")
        assert target.split("/")[2] in str(caught.value)


def test_a_redirect_off_the_allow_list_or_to_another_scheme_is_refused(origin: str) -> None:
    listed = fetcher(allow_hosts=["127.0.0.1"])
    port = origin.rsplit(":", 1)[1]
    with pytest.raises(ForbiddenUrl, match="localhost is not in the allowed"):
        listed.fetch(f"http://{origin}/to?u=http://localhost:{port}/img")
    with pytest.raises(ForbiddenUrl, match="only http and https"):
        listed.fetch(f"http://{origin}/to?u=file:///etc/passwd")


def test_content_length_over_the_limit_is_refused_before_reading(origin: str) -> None:
    with pytest.raises(ImageTooLarge, match="5,000 bytes; the limit is 4,096") as caught:
        fetcher().fetch(f"http://{origin}/big")
    assert caught.value.kind == "image_too_large"


def test_a_chunked_body_over_the_limit_is_cut_off(origin: str) -> None:
    assert len(fetcher(max_bytes=8192).fetch(f"http://{origin}/chunked")) == 4096
    with pytest.raises(ImageTooLarge, match="more than 2,048 bytes"):
        fetcher(max_bytes=2048).fetch(f"http://{origin}/chunked")


@pytest.mark.parametrize("path", ["slowbody", "slowheaders"])
def test_a_trickling_server_hits_the_deadline(origin: str, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageUnreachable, match=r"after 0\.3 s") as caught:
        fetcher(timeout_s=0.3).fetch(f"http://{origin}/{path}")
    assert time.monotonic() - started < 1.0
    assert caught.value.kind == "image_unreachable"


def test_the_deadline_covers_the_resolver() -> None:
    release = threading.Event()

    def stuck(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["93.184.216.34"]

    slow = SafeFetcher(ImageFetchSettings(timeout_s=0.2), resolver=stuck)
    try:
        with pytest.raises(ImageUnreachable, match="resolving the host"):
            slow.fetch("http://images.example.com/a.jpg")
    finally:
        release.set()


@pytest.mark.parametrize(
    ("path", "message"),
    [("missing", "answered 404"), ("short", "closed after 10 bytes")],
)
def test_http_failures_are_unreachable(origin: str, path: str, message: str) -> None:
    with pytest.raises(ImageUnreachable, match=message):
        fetcher().fetch(f"http://{origin}/{path}")


def test_a_closed_port_is_unreachable() -> None:
    with pytest.raises(ImageUnreachable, match=r"127\.0\.0\.1:9"):
        fetcher().fetch("http://127.0.0.1:9/img")


def test_an_unresolvable_host_is_unreachable() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    missing = SafeFetcher(ImageFetchSettings(), resolver=nxdomain)
    with pytest.raises(ImageUnreachable, match=r"no-such-host\.example could not be resolved"):
        missing.fetch("http://no-such-host.example/img")


# --- https: SNI and certificate checks while connecting to the pinned address --------------


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-subj", "/CN=images.shop.test", "-addext", "subjectAltName=DNS:images.shop.test"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = Server(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for address in serve(server):
        yield address, cert, names


def test_https_verifies_the_certificate_for_the_url_host(
    tls_origin: tuple[str, Path, list],
) -> None:
    address, cert, names = tls_origin
    port = address.rsplit(":", 1)[1]
    trust = ssl.create_default_context(cafile=str(cert))
    settings = ImageFetchSettings(allow_private_networks=True, timeout_s=2)
    pinned = SafeFetcher(settings, resolver=lambda h, p: ["127.0.0.1"], ssl_context=trust)
    assert pinned.fetch(f"https://images.shop.test:{port}/img") == BODY
    assert names[-1] == "images.shop.test"
    assert Handler.seen_hosts[-1] == f"images.shop.test:{port}"

    with pytest.raises(ImageUnreachable, match="certificate"):
        pinned.fetch(f"https://other.shop.test:{port}/img")
    untrusted = SafeFetcher(settings, resolver=lambda h, p: ["127.0.0.1"])
    with pytest.raises(ImageUnreachable, match="certificate"):
        untrusted.fetch(f"https://images.shop.test:{port}/img")
