"""Where a webhook may point (SPEC §14): http(s) URLs whose host resolves only to public
addresses, unless `webhooks.allow_private_networks`.

The check runs when an endpoint is created or changed (`resolve`), and again on every
connection a POST opens, on the addresses it then connects to (`check_addresses`, from the
connector's resolver in poster.py), so a name that resolves to a public address at creation and
to 127.0.0.1 later (DNS rebinding) reaches nothing inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(Exception):
    """The URL is not one postroom posts to; the message says why (never with the secret)."""


class Target(NamedTuple):
    scheme: str
    host: str  # as written: the Host header and TLS's server name
    port: int


def parse_url(url: str) -> Target:
    """The parts of an endpoint URL, or UnsafeUrl: http or https, a host, no credentials."""
    if len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        raise UnsafeUrl(f"a URL of at most {MAX_URL_LENGTH} characters, without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeUrl(f"not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials do not belong in the URL (verify the signature instead)")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are IPv4
_NEVER = (ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
          ipaddress.ip_network("fec0::/10"))  # site-local, deprecated but routed by some


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries: mapped, 6to4, NAT64, IPv4-compatible or
    IPv4-translated."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    value = int(address)
    if address in _NAT64 or value >> 32 == 0 or value >> 32 == 0xFFFF0000:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def is_public(address: IpAddress) -> bool:
    """Not loopback, private, link-local (cloud metadata at 169.254.169.254), shared (CGNAT),
    multicast, reserved or unspecified; an IPv6 address that carries an IPv4 one (mapped,
    6to4, NAT64, compatible, translated) counts as that IPv4 address as well."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in _NEVER):
            return False
        inner = _embedded_v4(address)
        if inner is not None and not is_public(inner):
            return False
    return address.is_global and not address.is_multicast


def literal(host: str) -> IpAddress | None:
    """`host` as an address when it is one (a URL's `[::1]` comes without brackets)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_addresses(host: str, addresses: list[str], allow_private: bool) -> None:
    """UnsafeUrl unless every address `host` resolved to may be posted to."""
    found = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    if not found:
        raise UnsafeUrl(f"{host} does not resolve")
    if not allow_private and not all(is_public(a) for a in found):
        raise UnsafeUrl(f"{host} resolves to a loopback, private, link-local or "
                        "metadata address (webhooks.allow_private_networks is false)")


async def resolve(target: Target, allow_private: bool, within: float = 5.0) -> list[IpAddress]:
    """The addresses to connect to for `target`, each allowed; UnsafeUrl when the name does
    not resolve (within `within` seconds) or any of its addresses is not public (and private
    ones are not allowed)."""
    address = literal(target.host)
    if address is not None:
        found = [str(address)]
    else:
        try:
            async with asyncio.timeout(within):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise UnsafeUrl(f"{target.host} did not resolve within {within:g} s") from None
        except (OSError, UnicodeError) as e:
            raise UnsafeUrl(f"{target.host} does not resolve ({e})") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    check_addresses(target.host, found, allow_private)
    return [ipaddress.ip_address(a.split("%")[0]) for a in found]
