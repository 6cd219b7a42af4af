"""Stream URLs of live sessions: which ones the server may connect to (SSRF), and their redacted form (web-safe).

A URL is accepted when its scheme is one the worker reads (rtsp, rtsps, rtmp, rtmps, http, https)
and every address its host resolves to is global: not loopback, link-local (169.254.169.254, the
cloud metadata service, included), private, unique-local, multicast, reserved or unspecified.
``STREAM_URL_ALLOWLIST`` names hosts, addresses or networks accepted nevertheless (a camera on the
LAN). The web checks at creation, the worker again before every connection.

http(s) redirects are followed here, not by ffmpeg: :func:`resolve_redirects` asks for the headers
alone (the standard library's ``http.client``, which never follows a redirect), connecting to the
very addresses it checked (a host is resolved once per hop, so DNS cannot answer the connection
otherwise than the check: no rebinding here), and checks every ``Location`` before following it;
the worker hands ffmpeg the final URL with ``max_redirects=0`` (ffmpeg >= 8 then fails on a
redirect instead of following it). What is left to trust: DNS answering ffmpeg as it answered the
check (ffmpeg resolves the name itself), and the segment URLs of an HLS playlist (fetched by
ffmpeg, unchecked; network protocols only).
Documented in docs/video-sessions.md ("Stream URLs"). Label Studio task media from absolute URLs
(labelstudio.media) are fetched through :func:`open_checked` under the same rules.

Credentials in a URL (``rtsp://user:pass@camera/...``) are used, never shown: messages and logs
carry :func:`redact`'s form, and text from libraries goes through :func:`scrub`.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

from sam3site.errors import InvalidInput

SCHEMES = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
CHECK_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class StreamUrlRefused(InvalidInput):
    code = "stream_url_refused"


def redact(url: str) -> str:
    """The URL with its user name and password replaced by ``***``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. an exception's message, which may quote the URL) without the URL's credentials."""
    parts = urlsplit(url)
    text = text.replace(url, redact(url))
    for secret in (parts.netloc.rpartition("@")[0] if "@" in parts.netloc else "", parts.password or ""):
        if secret:
            text = text.replace(secret, "***")
    return text


def _allowlist(entries: list[str]) -> tuple[set[str], list[IPNetwork]]:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            hosts.add(entry.strip().lower().rstrip("."))
    return hosts, networks


def address_is_public(address: IPAddress) -> bool:
    """True for addresses on the public internet; False for every range a server must not be led to."""
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    if mapped is not None:
        address = mapped
    return address.is_global and not (
        address.is_loopback or address.is_link_local or address.is_private or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


def _parse(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"A stream URL is at most {MAX_URL_LENGTH} characters.", code="invalid_stream_url")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidInput("The stream URL is not a valid URL.", code="invalid_stream_url") from None
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidInput(
            f"Stream URLs are {', '.join(f'{s}://' for s in SCHEMES)}; not {parts.scheme or 'this'}.",
            code="unsupported_scheme", detail={"schemes": sorted(SCHEMES)},
        )
    if not parts.hostname:
        raise InvalidInput("The stream URL names no host.", code="invalid_stream_url")
    return parts


def check_stream_url(url: str, allowlist: list[str]) -> str:
    """``url`` when the server may connect to it; :class:`StreamUrlRefused` (or InvalidInput) otherwise."""
    _checked_addresses(url, allowlist)
    return url


def _checked_addresses(url: str, allowlist: list[str]) -> list[str]:
    """Every address ``url``'s host resolves to (resolved once), each one allowed; refused otherwise.
    Empty for a host STREAM_URL_ALLOWLIST names: it is trusted by name, not resolved."""
    parts = _parse(url)
    host = (parts.hostname or "").lower().rstrip(".")
    hosts, networks = _allowlist(allowlist)
    if host in hosts:
        return []
    try:
        infos = socket.getaddrinfo(host, parts.port or SCHEMES[parts.scheme.lower()], type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):  # unknown host, a label too long for IDNA, a NUL...
        raise InvalidInput(f"The stream URL's host {host} does not resolve.", code="stream_url_unresolvable") from None
    addresses = list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in infos))
    refused = sorted(
        a for a in addresses
        if not any(ipaddress.ip_address(a) in network for network in networks) and not address_is_public(ipaddress.ip_address(a))
    )
    if refused or not addresses:
        raise StreamUrlRefused(
            f"The stream URL's host {host} resolves to addresses the server does not connect to ({', '.join(refused)}): "
            "loopback, link-local, private and other non-public ranges are refused unless listed in STREAM_URL_ALLOWLIST.",
            detail={"host": host, "addresses": refused},
        )
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand, whatever the name resolves to by then (no DNS
    rebinding); to the name itself when it was trusted by name (``address`` None)."""

    def __init__(self, host: str, port: int | None, address: str | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address or host

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, address: str | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address or host

    def connect(self) -> None:  # TLS to the checked address, verified against the URL's host name
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]  # set by HTTPSConnection.__init__
            socket.create_connection((self.address, self.port), self.timeout), server_hostname=self.host
        )


def _open(
    url: str, address: str | None, timeout: float, method: str, headers: dict[str, str], body: bytes | None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """One http(s) request for ``url`` sent to ``address``; the caller reads the response and closes the connection."""
    parts = urlsplit(url)
    connection_type = _PinnedHTTPSConnection if parts.scheme.lower() == "https" else _PinnedHTTPConnection
    connection = connection_type(parts.hostname or "", parts.port, address, timeout)
    headers = {"User-Agent": "sam3-server", **headers}
    if parts.username is not None:  # http://user:pass@camera/...: basic auth, as a browser would send it
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    try:
        connection.request(method, urlunsplit(("", "", parts.path or "/", parts.query, "")), body=body, headers=headers)
        return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def open_checked(
    url: str, allowlist: list[str] | Callable[[str], list[str]], *, timeout: float = CHECK_TIMEOUT_SECONDS,
    method: str = "GET", body: bytes | None = None,
    headers_for: Callable[[str], dict[str, str]] = lambda url: {}, what: str = "stream URL", code: str = "stream_url_unreachable",
) -> tuple[str, http.client.HTTPConnection, http.client.HTTPResponse]:
    """The final URL an http(s) ``url`` leads to, with the open connection and response (any status
    but a redirect): every hop checked before it is contacted, and sent to the addresses checked.
    ``headers_for(hop_url)``: the headers of each hop (credentials only for the origin they are meant for);
    ``allowlist`` may likewise be a function of the hop's URL (a host trusted on one port only).

    Raises StreamUrlRefused for a hop to a refused host, InvalidInput(``code``) when the server cannot
    be asked or redirects too often. The caller closes the connection."""
    for _ in range(MAX_REDIRECTS + 1):
        addresses = _checked_addresses(url, allowlist(url) if callable(allowlist) else allowlist)
        try:
            connection, response = _open(url, addresses[0] if addresses else None, timeout, method, headers_for(url), body)
        except (OSError, http.client.HTTPException) as error:  # refused, timed out, TLS, not HTTP...
            raise InvalidInput(f"The {what} {redact(url)} could not be reached: {scrub(str(error), url)}", code=code) from None
        location = response.getheader("Location")
        if response.status not in REDIRECT_STATUSES or not location:
            return url, connection, response
        connection.close()
        url = urljoin(url, location)
        if method != "GET":  # a redirected POST is not replayed (its body may carry credentials)
            raise InvalidInput(f"The {what} answered a {method} with a redirect.", code=code)
    raise InvalidInput(f"The {what} redirects more than {MAX_REDIRECTS} times.", code=code)


def resolve_redirects(url: str, allowlist: list[str], *, timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """The URL an http(s) ``url`` leads to, every hop checked before it is contacted; others as given.

    Raises StreamUrlRefused for a hop to a refused host, InvalidInput(``stream_url_unreachable``)
    when the server cannot be asked or answers with an error, or redirects too often."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        _checked_addresses(url, allowlist)
        return url
    url, connection, response = open_checked(url, allowlist, timeout=timeout)
    connection.close()
    if response.status >= 400:
        raise InvalidInput(f"The stream URL {redact(url)} answered HTTP {response.status}.", code="stream_url_unreachable")
    return url
