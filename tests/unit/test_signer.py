"""SDK-HMAC-SHA256 signing: the official vectors of shared/eg-api.md §2.3, byte for byte, and
a cross-check against huaweicloudsdkcore's own signer."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from bridge.eventgrid import signer

PY_URL = "https://service.endpoint.myhuaweicloud.com/resources?size=1"
PY_HEADERS = {
    "Host": "service.endpoint.myhuaweicloud.com",
    "X-Sdk-Date": "20200608T023900Z",
    "TEST_UNDERSCORE": "TEST_VALUE",
}
GO_DATE = {"X-Sdk-Date": "20060102T150405Z"}


@pytest.mark.parametrize(
    ("method", "url", "headers", "body", "ak", "sk", "expected"),
    [
        pytest.param(
            "GET", PY_URL, PY_HEADERS, b"", "AccessKey", "SecretKey",
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, "
            "Signature=cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842",
            id="1-python-get",
        ),
        pytest.param(
            "POST", PY_URL, PY_HEADERS, b'{"name":"test","id":1}', "AccessKey", "SecretKey",
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, "
            "Signature=436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f",
            id="2-python-post",
        ),
        pytest.param(
            "GET",
            "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
            "?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
            {"Content-Type": "application/json", "X-Sdk-Date": "20191115T033655Z",
             "Host": "service.region.example.com"},
            b"", "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
            "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, "
            "SignedHeaders=content-type;host;x-sdk-date, "
            "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe",
            id="3-java",
        ),
        pytest.param(
            "GET", "https://example.huaweicloud.com/path?limit=1", GO_DATE, b"",
            "AccessKey", "SecretKey",
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, "
            "Signature=5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624",
            id="4-go-get",
        ),
        pytest.param(
            "POST", "https://example.huaweicloud.com/path?key=value", GO_DATE,
            b'{"Name":"test","Id":1}\n', "AccessKey", "SecretKey",
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, "
            "Signature=cecc2af119b18ab70b4d094c0750f3b42c02f254903179a0fc2cc72fc9db4f59",
            id="5-go-post-trailing-newline",
        ),
    ],
)
def test_official_vectors(method: str, url: str, headers: dict[str, str], body: bytes,
                          ak: str, sk: str, expected: str) -> None:
    assert signer.sign(method, url, headers, body, access_key=ak, secret_key=sk) == expected


def test_vector_1_intermediate_values() -> None:
    names = signer.signed_header_names(PY_HEADERS)
    canonical = signer.canonical_request("GET", PY_URL, PY_HEADERS, names,
                                         signer.payload_hash(b"", PY_HEADERS))
    assert canonical == (
        "GET\n/resources/\nsize=1\nhost:service.endpoint.myhuaweicloud.com\n"
        "x-sdk-date:20200608T023900Z\n\nhost;x-sdk-date\n" + signer.EMPTY_BODY_SHA256
    )
    assert signer.string_to_sign(canonical, "20200608T023900Z") == (
        "SDK-HMAC-SHA256\n20200608T023900Z\n"
        "de94dd1e1ccdb730b403ce35d7e14f7c7b04337f6def1c3a3a2ba936852b133f"
    )


def test_vector_3_canonical_request_hash() -> None:
    url = ("https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
           "?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0")
    headers = {"Content-Type": "application/json", "X-Sdk-Date": "20191115T033655Z",
               "Host": "service.region.example.com"}
    canonical = signer.canonical_request("GET", url, headers, signer.signed_header_names(headers),
                                         signer.EMPTY_BODY_SHA256)
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
    )


def test_canonical_query_vector() -> None:
    params: list[tuple[str, Any]] = [
        ("limit", 1), ("enable", True), ("test", "一 (&=?!#%.*)"), ("path", "/tmp/123"),
        ("multi", [1, 2, 3]),
    ]
    assert signer.canonical_query(params) == (
        "enable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123"
        "&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29"
    )


def test_canonical_query_round_trips_through_parse_query() -> None:
    query = signer.canonical_query([("test", "一 (&=?!#%.*)"), ("a", "x+y")])
    assert signer.canonical_query(signer.parse_query(query)) == query


def test_eg_shaped_example() -> None:
    body = (b'{"events":[{"id":"evt-1","source":"my-source","specversion":"1.0",'
            b'"type":"com.example.test","data":{"k":"v"}}]}')
    url = ("https://eg.cn-north-4.myhuaweicloud.com/v1/0123456789abcdef0123456789abcdef"
           "/channels/11111111-2222-3333-4444-555555555555/events")
    headers = {"Content-Type": "application/json",
               "X-Project-Id": "0123456789abcdef0123456789abcdef",
               "X-Sdk-Date": "20240101T000000Z", "Host": signer.host_of(url)}
    assert signer.payload_hash(body, headers) == (
        "ce1db0153b99f6538680f495e012544959e0c064a4739056a60951fea6c7294a"
    )
    names = signer.signed_header_names(headers)
    canonical = signer.canonical_request("POST", url, headers, names,
                                         signer.payload_hash(body, headers))
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "7510e5bed2414a97de008954540d04ce28c2c73817a7b8aa237da4fb761ea291"
    )
    assert signer.sign("POST", url, headers, body, access_key="AKEXAMPLE",
                       secret_key="SKEXAMPLE") == (
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, "
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=a13fa3031fb69d30fa4a6e2623324d81687dd574c913d2b87f80e93211030ac7"
    )


def test_canonical_uri_always_ends_in_slash_and_encodes_segments() -> None:
    assert signer.canonical_uri("/v1/p/sources") == "/v1/p/sources/"
    assert signer.canonical_uri("/v1/p/sources/") == "/v1/p/sources/"
    assert signer.canonical_uri("/a%20b/c*d") == "/a%20b/c%2Ad/"
    assert signer.canonical_uri("") == "/"


def test_missing_date_header_is_refused() -> None:
    with pytest.raises(ValueError, match="X-Sdk-Date"):
        signer.sign("GET", "https://h/x", {"Host": "h"}, b"", access_key="AK", secret_key="SK")


def test_parse_authorization_round_trip_and_rejects_other_shapes() -> None:
    value = signer.authorization_value("AK1", ["host", "x-sdk-date"], "ab" * 32)
    assert signer.parse_authorization(value) == ("AK1", ("host", "x-sdk-date"), "ab" * 32)
    for bad in ("Bearer x", "SDK-HMAC-SHA256 Access=AK1,SignedHeaders=host,Signature=ab",
                value.replace("SDK-HMAC-SHA256", "SDK-HMAC-SM3")):
        with pytest.raises(ValueError):
            signer.parse_authorization(bad)


def _sdk_sign(method: str, host: str, path: str, query: list[tuple[str, Any]],
              headers: dict[str, str], body: bytes) -> dict[str, str]:
    request = SdkRequest(method=method, schema="https", host=host, resource_path=path,
                         query_params=query, header_params=dict(headers), body=body)
    signed = Signer(BasicCredentials("AKCROSS", "SKCROSS/with+chars")).sign(request)
    return dict(signed.header_params)


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "body"),
    [
        ("GET", "/v1/0123456789abcdef0123456789abcdef/sources",
         [("limit", "100"), ("name", "orders rabbit"), ("offset", "0")],
         {"Content-Type": "application/json", "X-Project-Id": "p1",
          "User-Agent": "huaweicloud-usdk-python/3.0"}, b""),
        ("POST", "/v1/p/channels/c/events", [],
         {"Content-Type": "application/json;charset=UTF-8", "X-Project-Id": "p1"},
         b'{"events": [{"id": "\xc3\xa9", "data": {"k": "v"}}]}'),
        ("PUT", "/v1/p/sources/3f0c%20x", [("tag", ["b", "a"]), ("flag", True)],
         {"Content-Type": "application/json", "X-Trace_Id": "not-signed"}, b'{"description":""}'),
        ("DELETE", "/v1/p/sources/abc", [], {"Content-Type": "application/json"}, b""),
    ],
)
def test_same_signature_as_huaweicloudsdkcore(method: str, path: str,
                                              query: list[tuple[str, Any]],
                                              headers: dict[str, str], body: bytes) -> None:
    host = "eg.cn-north-4.myhuaweicloud.com"
    headers = {**headers, "X-Sdk-Date": "20240102T030405Z"}
    by_sdk = _sdk_sign(method, host, path, query, headers, body)
    url = f"https://{host}{path}?{signer.canonical_query(query)}"
    ours = signer.sign(method, url, {**headers, "Host": host}, body, access_key="AKCROSS",
                       secret_key="SKCROSS/with+chars")
    assert ours == by_sdk["Authorization"]
