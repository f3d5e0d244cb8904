"""SDK-HMAC-SHA256 request signing, as huaweicloudsdkcore does it (shared/eg-api.md §2.2).

Pure functions, no I/O and no clock: the client's :class:`~bridge.eventgrid.auth.AkSkAuth`
signs with them and the emulator verifies with them, so both follow one implementation of
the steps. The official test vectors of eg-api.md §2.3 are reproduced in
``tests/unit/test_signer.py`` and the result is cross-checked there against the SDK's own
``huaweicloudsdkcore.signer.Signer``.

The SDK's signer is not used at run time: it is importable without the SDK's HTTP client, but
installing it pulls ``requests``, ``pymongo``, ``simplejson`` and more into the daemon, it
is untyped, works on its own ``SdkRequest`` type, rewrites header values in place and keeps
the canonical-request steps a verifier needs in private methods.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
"""``X-Sdk-Date`` format, UTC, e.g. ``20200608T023900Z`` (§2.2 step 1)."""
CONTENT_SHA256_HEADER = "X-Sdk-Content-Sha256"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_AUTHORIZATION = re.compile(
    r"^SDK-HMAC-SHA256 Access=([^,\s]+), SignedHeaders=([^,\s]+), Signature=([0-9a-f]{64})$"
)

QueryValue = str | int | float | bool | Sequence[str | int | float | bool]


class Authorization(NamedTuple):
    """The parts of an ``Authorization: SDK-HMAC-SHA256 ...`` header (§2.2 step 12)."""

    access_key: str
    signed_headers: tuple[str, ...]
    """Lowercase header names in the order the header lists them."""
    signature: str
    """64 lowercase hex characters."""


def encode(text: str) -> str:
    """Percent-encode ``text`` keeping only RFC 3986 unreserved characters (§2.2 step 5:
    Python ``quote(s, safe='~')``; space -> ``%20``, ``/`` -> ``%2F``, ``*`` -> ``%2A``)."""
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """CanonicalURI of a request path (§2.2 step 5): URL-decode, encode each ``/`` segment,
    always end in ``/`` (``/v1/p/sources`` -> ``/v1/p/sources/``)."""
    uri = "/".join(encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def canonical_query(params: Iterable[tuple[str, QueryValue]]) -> str:
    """CanonicalQueryString of (key, value) pairs (§2.2 step 6).

    Args:
        params: pairs in any order; a key may repeat; a list or tuple value gives one pair
            per item; booleans become ``true``/``false``.

    Returns ``k=v`` pairs sorted by key, then value, both :func:`encode`-d, joined by ``&``;
    "" for no pairs. The client sends exactly this string as the query, so what is signed
    is what goes on the wire.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in params:
        if isinstance(value, list | tuple):
            pairs.extend((key, _text(v)) for v in value)
        else:
            pairs.append((key, _text(value)))
    pairs.sort()
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in pairs)


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decode a query string as received (``a=1&b=x%20y``) into pairs, for verifying.

    ``+`` stays a literal plus (RFC 3986); signers encode a space as ``%20``.
    """
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def host_of(url: str) -> str:
    """The ``Host`` header value for ``url``: host and port as written, no user info
    (§2.2 step 2)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    """HashedPayload (§2.2 step 8): hex SHA-256 of the exact body bytes, or the value of an
    ``X-Sdk-Content-Sha256`` header when the request has one."""
    override = _lower(headers).get(CONTENT_SHA256_HEADER.lower())
    if override:
        return override
    return hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """The headers the Python SDK signs (§2.2 step 4): every name without ``_``, lowercased
    and sorted."""
    return sorted({name.lower() for name in headers if "_" not in name})


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def canonical_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    hashed_payload: str,
) -> str:
    """CanonicalRequest (§2.2 step 9).

    Args:
        method: HTTP method, any case.
        url: the URL (or just ``path?query``) as sent; its query is decoded with
            :func:`parse_query`.
        headers: the request headers; every name in ``signed_headers`` must be present.
        signed_headers: lowercase names, in the order to sign them.
        hashed_payload: :func:`payload_hash` of the body.

    Raises:
        KeyError: a signed header is missing from ``headers``.
    """
    parts = urlsplit(url)
    lower = _lower(headers)
    canonical_headers = "".join(f"{name}:{lower[name].strip()}\n" for name in signed_headers)
    return "\n".join([
        method.upper(),
        canonical_uri(parts.path or "/"),
        canonical_query(parse_query(parts.query)),
        canonical_headers,
        ";".join(signed_headers),
        hashed_payload,
    ])


def string_to_sign(canonical: str, sdk_date: str) -> str:
    """StringToSign (§2.2 step 10): algorithm, ``X-Sdk-Date``, hex SHA-256 of the
    canonical request, one per line."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``to_sign`` keyed with the SK bytes themselves (§2.2 step 11)."""
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_value(access_key: str, signed_headers: Sequence[str], sig: str) -> str:
    """``SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b>, Signature=<hex>`` (§2.2 step 12)."""
    return f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed_headers)}, " \
           f"Signature={sig}"


def parse_authorization(value: str) -> Authorization:
    """Split an ``Authorization`` header written by :func:`authorization_value`.

    Raises:
        ValueError: not an ``SDK-HMAC-SHA256`` header of that exact shape.
    """
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        raise ValueError("not an SDK-HMAC-SHA256 Authorization header")
    names = tuple(match.group(2).split(";"))
    return Authorization(match.group(1), names, match.group(3))


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
) -> str:
    """The ``Authorization`` value for a request, signing every header in ``headers``
    except names containing ``_`` (as the Python SDK does, §2.2 steps 4-12).

    The caller adds ``X-Sdk-Date`` (and ``Host``, ``X-Project-Id``) to ``headers`` first and
    sends exactly these headers and these body bytes.

    Raises:
        ValueError: ``headers`` has no ``X-Sdk-Date`` (it must always be signed, step 1).
    """
    sdk_date = _lower(headers).get(DATE_HEADER.lower())
    if not sdk_date:
        raise ValueError("X-Sdk-Date header is required for signing")
    names = signed_header_names(headers)
    canonical = canonical_request(method, url, headers, names, payload_hash(body, headers))
    return authorization_value(access_key, names, signature(secret_key, string_to_sign(
        canonical, sdk_date)))
