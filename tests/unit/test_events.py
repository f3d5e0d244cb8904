"""bridge.events: broker message -> CloudEvent, one test per rule of design §6."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from bridge.errors import ConversionError
from bridge.events import (
    EVENT_MAX_BYTES,
    InboundMessage,
    encode_event,
    event_size,
    to_cloudevent,
)

RECEIVED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
SOURCE = "orders-rabbit"
DEFAULT_TYPE = "com.example.orders.message"
RABBIT_HEADERS = {
    "x-death": [{"count": 1, "queue": "q", "reason": "rejected"}],
    "x-first-death-queue": "q",
    "x-first-death-reason": "rejected",
    "x-last-death-exchange": "dlx",
    "x-delay": 500,
    "x-received-from": [{"uri": "amqp://upstream"}],
    "x-delivery-count": 2,
}


def msg(body: bytes = b'{"a": 1}', **kw: Any) -> InboundMessage:
    kw.setdefault("received_at", RECEIVED)
    return InboundMessage(body=body, **kw)


def convert(m: InboundMessage) -> dict[str, Any]:
    return to_cloudevent(m, source=SOURCE, default_type=DEFAULT_TYPE)


def extensions(event: dict[str, Any]) -> dict[str, Any]:
    core = {
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "subject",
        "time",
        "dataschema",
        "data",
    }
    return {k: v for k, v in event.items() if k not in core}


@pytest.fixture
def other_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- plain messages: the envelope -------------------------------------------------------------


def test_plain_json_message_envelope() -> None:
    event = convert(msg(message_id="m-1", content_type="application/json", subject="orders.new"))
    assert event == {
        "specversion": "1.0",
        "id": "m-1",
        "source": SOURCE,
        "type": DEFAULT_TYPE,
        "datacontenttype": "application/json",
        "subject": "orders.new",
        "time": "2024-05-06T07:08:09.123456Z",
        "contenttype": "application/json",
        "data": {"a": 1},
    }


def test_type_from_message_beats_default() -> None:
    assert convert(msg(type="com.example.created"))["type"] == "com.example.created"
    assert convert(msg(type=""))["type"] == DEFAULT_TYPE


@pytest.mark.parametrize("subject", ["", None])
def test_empty_subject_is_omitted(subject: str | None) -> None:
    assert "subject" not in convert(msg(subject=subject))


def test_keys_become_extension() -> None:
    assert convert(msg(keys="k1 k2"))["keys"] == "k1 k2"
    assert "keys" not in convert(msg())


# --- id -------------------------------------------------------------------------------------


IDENTITY = {
    "queue": "orders",
    "exchange": "shop",
    "routing_key": "orders.new",
    "properties": {"delivery_mode": 2, "timestamp": datetime(2024, 1, 1)},
}


def test_message_id_is_the_id() -> None:
    assert convert(msg(message_id="abc", identity=IDENTITY))["id"] == "abc"


def test_hashed_id_is_stable_across_redeliveries() -> None:
    first = msg(identity=IDENTITY, headers={"tenant": "acme"})
    again = msg(
        identity=IDENTITY,
        headers={"tenant": "acme", **RABBIT_HEADERS},
        received_at=RECEIVED + timedelta(minutes=5),
    )
    event = convert(first)
    assert event["id"] == convert(again)["id"]
    assert len(event["id"]) == 64
    int(event["id"], 16)


def test_hashed_id_is_deterministic_with_odd_values() -> None:
    headers = {
        "b": b"\x00\xff",
        "d": Decimal("1.10"),
        "t": datetime(2024, 1, 1, tzinfo=UTC),
        "big": 2**80,
        "nested": {"z": [2**70, {1, 2}], "a": None},
    }
    ids = {convert(msg(identity=IDENTITY, headers=dict(headers)))["id"] for _ in range(3)}
    assert len(ids) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"a": 2}'},
        {"headers": {"tenant": "other"}},
        {"identity": {**IDENTITY, "queue": "other"}},
    ],
)
def test_hashed_id_changes_with_content(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "body": b'{"a": 1}',
        "identity": IDENTITY,
        "headers": {"tenant": "acme"},
    }
    assert convert(msg(**base))["id"] != convert(msg(**{**base, **change}))["id"]


def test_hashed_id_independent_of_header_order() -> None:
    one = msg(identity=IDENTITY, headers={"a": "1", "b": "2"})
    two = msg(identity=IDENTITY, headers={"b": "2", "a": "1"})
    assert convert(one)["id"] == convert(two)["id"]


# --- time -----------------------------------------------------------------------------------


def test_time_prefers_broker_timestamp() -> None:
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert convert(msg(timestamp=stamp))["time"] == "2024-01-02T03:04:05Z"


def test_time_falls_back_to_received_at() -> None:
    assert convert(msg())["time"] == "2024-05-06T07:08:09.123456Z"


@pytest.mark.usefixtures("other_tz")
def test_time_is_utc_whatever_the_process_zone() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    aware = datetime(2024, 1, 2, 8, 34, 5, 250000, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert convert(msg(timestamp=naive))["time"] == "2024-01-02T03:04:05Z"
    assert convert(msg(timestamp=aware))["time"] == "2024-01-02T03:04:05.250Z"
    ce = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-type": "t",
        "ce-time": "2024-01-02T08:34:05+05:30",
    }
    assert convert(msg(headers=ce))["time"] == "2024-01-02T03:04:05Z"


# --- data -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.acme+json",
        "text/x.custom+JSON ; q=1",
    ],
)
def test_json_content_types(content_type: str) -> None:
    event = convert(msg(b'{"k": [1, 2]}', content_type=content_type))
    assert event["data"] == {"k": [1, 2]}
    assert event["contenttype"] == content_type


@pytest.mark.parametrize(
    ("body", "value"),
    [(b"[1, 2]", [1, 2]), (b"42", 42), (b'"s"', "s"), (b"null", None), (b"true", True)],
)
def test_non_object_json_is_wrapped_in_value(body: bytes, value: Any) -> None:
    assert convert(msg(body, content_type="application/json"))["data"] == {"value": value}
    assert convert(msg(body))["data"] == {"value": value}


def test_json_sniffed_without_content_type() -> None:
    event = convert(msg(b' {"x": "y"} '))
    assert event["data"] == {"x": "y"}
    assert "contenttype" not in event


def test_non_json_content_type_is_not_parsed() -> None:
    event = convert(msg(b'{"x": 1}', content_type="text/plain"))
    assert event["data"] == {"text": '{"x": 1}'}
    assert event["contenttype"] == "text/plain"


def test_json_content_type_with_bad_body_becomes_text() -> None:
    assert convert(msg(b"{oops", content_type="application/json"))["data"] == {"text": "{oops"}


def test_text_body() -> None:
    assert convert(msg("héllo".encode()))["data"] == {"text": "héllo"}


def test_binary_body_becomes_base64() -> None:
    body = b"\x89PNG\r\n\x1a\n\xff\xfe"
    event = convert(msg(body, content_type="image/png"))
    assert event["data"] == {"base64": base64.b64encode(body).decode()}
    assert base64.b64decode(event["data"]["base64"]) == body


def test_latin1_charset() -> None:
    body = "café".encode("latin-1")
    assert convert(msg(body, content_type="text/plain; charset=ISO-8859-1"))["data"] == {
        "text": "café"
    }
    assert convert(msg(body, content_type="text/plain"))["data"] == {
        "base64": base64.b64encode(body).decode()
    }


def test_json_in_latin1_charset() -> None:
    body = '{"name": "café"}'.encode("latin-1")
    event = convert(msg(body, content_type='application/json; charset="latin1"'))
    assert event["data"] == {"name": "café"}


@pytest.mark.parametrize("charset", ["no-such-charset", "base64"])
def test_unknown_charset_tries_utf8(charset: str) -> None:
    event = convert(msg("ü".encode(), content_type=f"text/plain; charset={charset}"))
    assert event["data"] == {"text": "ü"}


def test_empty_body_has_no_data() -> None:
    event = convert(msg(b"", content_type="application/json"))
    assert "data" not in event
    assert event["datacontenttype"] == "application/json"


def test_empty_content_type_counts_as_none() -> None:
    event = convert(msg(b'{"a": 1}', content_type=""))
    assert event["data"] == {"a": 1}
    assert "contenttype" not in event


# --- headers -> extensions ------------------------------------------------------------------


def test_rabbitmq_headers_are_not_extensions() -> None:
    event = convert(msg(headers={**RABBIT_HEADERS, "X-Death": [], "tenant": "acme"}))
    assert extensions(event) == {"tenant": "acme"}


def test_header_names_are_reduced() -> None:
    event = convert(msg(headers={"Tenant-ID": "a", "x_b.C": "b", "--": "gone", "": "gone"}))
    assert extensions(event) == {"tenantid": "a", "xbc": "b"}


@pytest.mark.parametrize(
    "name",
    [
        "id",
        "Source",
        "TYPE",
        "spec-version",
        "time",
        "subject",
        "data",
        "data_base64",
        "dataschema",
        "datacontenttype",
    ],
)
def test_reserved_names_never_overwritten(name: str) -> None:
    event = convert(msg(message_id="m", headers={name: "evil"}, subject="s"))
    assert "evil" not in event.values()
    assert event["source"] == SOURCE


def test_header_collision_first_sorted_original_wins() -> None:
    with capture_logs() as logs:
        event = convert(
            msg(headers={"tenant_id": "lower", "Tenant-Id": "upper", "tenantid": "plain"})
        )
    assert event["tenantid"] == "upper"  # "T" (U+0054) sorts before "t"
    dropped = {entry["dropped"] for entry in logs if entry["event"] == "extension_collision"}
    assert dropped == {"tenant_id", "tenantid"}
    assert all(entry["log_level"] == "debug" for entry in logs)


def test_header_collision_independent_of_order() -> None:
    one = convert(msg(headers={"a-b": 1, "a_b": 2, "ab": 3}))
    two = convert(msg(headers={"ab": 3, "a_b": 2, "a-b": 1}))
    assert one["ab"] == two["ab"] == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (True, True),
        (False, False),
        (0, 0),
        (2**31 - 1, 2**31 - 1),
        (-(2**31), -(2**31)),
        (2**31, "2147483648"),
        (-(2**31) - 1, "-2147483649"),
        (2**80, str(2**80)),
        (b"\x00\x01\xff", "AAH/"),
        (bytearray(b"hi"), "aGk="),
        (Decimal("1.10"), "1.10"),
        (Decimal("1E+3"), "1E+3"),
        (Decimal("-0.000001"), "-0.000001"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z"),
        (1.5, "1.5"),
        (None, "null"),
        ([1, "a", None], '[1,"a",null]'),
        ({"k": {"n": [1, 2]}}, '{"k":{"n":[1,2]}}'),
        (
            {"b": b"\xff", "d": Decimal("2.5"), "t": datetime(2024, 1, 1, tzinfo=UTC)},
            '{"b":"/w==","d":"2.5","t":"2024-01-01T00:00:00Z"}',
        ),
        ([2**70], f"[{2**70}]"),
    ],
)
def test_header_values(value: Any, expected: Any) -> None:
    event = convert(msg(headers={"h": value}))
    assert event["h"] == expected
    assert type(event["h"]) is type(expected)
    orjson.dumps(event)


def test_odd_header_types_never_crash() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    headers = {"o": Odd(), "c": cyclic, "s": frozenset({"b", "a"}), 7: "int-name"}
    event = convert(msg(headers=headers))
    assert event["o"] == '"odd"'
    assert event["s"] == '["a","b"]'
    assert event["7"] == "int-name"
    assert isinstance(event["c"], str)
    orjson.dumps(event)


def test_trace_context_passes_through() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event = convert(msg(headers={"traceparent": tp, "tracestate": "congo=t61rcWkgMzE"}))
    assert event["traceparent"] == tp
    assert event["tracestate"] == "congo=t61rcWkgMzE"


def test_mapped_extensions_win_over_headers() -> None:
    event = convert(
        msg(
            content_type="application/json",
            keys="k",
            headers={"Content-Type": "text/plain", "keys": "h"},
        )
    )
    assert event["contenttype"] == "application/json"
    assert event["keys"] == "k"


# --- binary-mode CloudEvents ----------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["cloudEvents_", "cloudEvents:", "ce-", "ce_", "CE-", "CloudEvents_"]
)
def test_binary_cloudevent_each_prefix(prefix: str) -> None:
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": "ce-1",
        f"{prefix}type": "com.example.ce",
        f"{prefix}source": "/upstream",
        f"{prefix}subject": "ce-subject",
        f"{prefix}time": "2024-01-02T03:04:05.5Z",
        f"{prefix}dataschema": "https://example.com/s.json",
        f"{prefix}myext": "x",
        "tenant": "acme",
    }
    event = convert(
        msg(
            b'{"a": 1}',
            headers=headers,
            content_type="application/json",
            message_id="amqp-id",
            type="amqp-type",
            subject="rk",
        )
    )
    assert event == {
        "specversion": "1.0",
        "id": "ce-1",
        "source": SOURCE,
        "type": "com.example.ce",
        "datacontenttype": "application/json",
        "subject": "ce-subject",
        "time": "2024-01-02T03:04:05.500Z",
        "dataschema": "https://example.com/s.json",
        "myext": "x",
        "tenant": "acme",
        "originalsource": "/upstream",
        "contenttype": "application/json",
        "data": {"a": 1},
    }


def test_binary_cloudevent_datacontenttype_header() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-type": "t",
        "ce-datacontenttype": "text/plain",
    }
    event = convert(msg(b'{"a": 1}', headers=headers, content_type="application/json"))
    assert event["datacontenttype"] == "application/json"
    assert event["contenttype"] == "text/plain"
    assert event["data"] == {"text": '{"a": 1}'}


def test_binary_cloudevent_bytes_and_timestamp_attributes() -> None:
    headers = {
        "cloudEvents:specversion": b"1.0",
        "cloudEvents:id": b"id-7",
        "cloudEvents:type": b"t",
        "cloudEvents:time": datetime(2024, 1, 2),
    }
    event = convert(msg(headers=headers, subject="rk"))
    assert (event["id"], event["type"], event["time"]) == ("id-7", "t", "2024-01-02T00:00:00Z")
    assert event["subject"] == "rk"


def test_binary_cloudevent_falls_back_when_ce_time_is_not_rfc3339() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-time": "yesterday"}
    stamp = datetime(2024, 1, 2, tzinfo=UTC)
    assert convert(msg(headers=headers, timestamp=stamp))["time"] == "2024-01-02T00:00:00Z"


def test_incomplete_binary_cloudevent_is_a_plain_message() -> None:
    event = convert(msg(headers={"ce-type": "t", "ce-id": "1"}, message_id="m"))
    assert (event["id"], event["type"]) == ("m", DEFAULT_TYPE)
    assert extensions(event) == {"cetype": "t", "ceid": "1"}


def test_binary_attribute_collision_first_sorted_wins() -> None:
    headers = {"ce_id": "second", "ce-id": "first", "ce-specversion": "1.0", "ce-type": "t"}
    assert convert(msg(headers=headers))["id"] == "first"


def test_binary_cloudevent_headers_are_not_extensions() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-data_base64": "x"}
    assert extensions(convert(msg(headers=headers))) == {}


# --- structured-mode CloudEvents ------------------------------------------------------------


def structured(
    doc: dict[str, Any], content_type: str = "application/cloudevents+json", **kw: Any
) -> dict[str, Any]:
    return convert(msg(orjson.dumps(doc), content_type=content_type, **kw))


CE = {"specversion": "1.0", "id": "s-1", "type": "com.example.s", "source": "/up"}


def test_structured_cloudevent() -> None:
    doc = {
        **CE,
        "subject": "sub",
        "time": "2024-01-02T03:04:05+01:00",
        "datacontenttype": "application/xml+json",
        "comexampleext": "v",
        "Weird-Name": 5,
        "data": {"k": "v"},
    }
    event = structured(
        doc,
        "Application/CloudEvents+JSON; charset=UTF-8",
        message_id="amqp",
        subject="rk",
        headers={"tenant": "acme"},
    )
    assert event == {
        "specversion": "1.0",
        "id": "s-1",
        "source": SOURCE,
        "type": "com.example.s",
        "datacontenttype": "application/json",
        "subject": "sub",
        "time": "2024-01-02T02:04:05Z",
        "comexampleext": "v",
        "weirdname": 5,
        "tenant": "acme",
        "originalsource": "/up",
        "contenttype": "application/xml+json",
        "data": {"k": "v"},
    }


def test_structured_extensions_win_over_headers() -> None:
    assert structured({**CE, "tenant": "ce"}, headers={"tenant": "header"})["tenant"] == "ce"


def test_structured_without_subject_uses_routing_key() -> None:
    assert structured(CE, subject="rk")["subject"] == "rk"


@pytest.mark.parametrize(
    ("extra", "data"),
    [
        ({"data": [1, 2]}, {"value": [1, 2]}),
        ({"data": "s"}, {"value": "s"}),
        ({"data": "s", "datacontenttype": "text/plain"}, {"text": "s"}),
        ({"data": 3, "datacontenttype": "application/json"}, {"value": 3}),
        (
            {
                "data_base64": base64.b64encode(b'{"x": 1}').decode(),
                "datacontenttype": "application/json",
            },
            {"x": 1},
        ),
        ({"data_base64": base64.b64encode(b"hi").decode()}, {"text": "hi"}),
        (
            {
                "data_base64": base64.b64encode(b"\xff\x00").decode(),
                "datacontenttype": "application/octet-stream",
            },
            {"base64": "/wA="},
        ),
    ],
)
def test_structured_data_is_wrapped_like_bodies(extra: dict[str, Any], data: Any) -> None:
    assert structured({**CE, **extra})["data"] == data


def test_structured_without_data() -> None:
    event = structured({**CE, "data": None})
    assert "data" not in event
    assert "contenttype" not in event


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'"x"',
        orjson.dumps({"id": "1", "type": "t"}),
        orjson.dumps({**CE, "id": ""}),
        orjson.dumps({**CE, "type": 5}),
        orjson.dumps({**CE, "data": {}, "data_base64": "eA=="}),
        orjson.dumps({**CE, "data_base64": "not base64!"}),
    ],
)
def test_unreadable_structured_cloudevent_is_a_conversion_error(body: bytes) -> None:
    with pytest.raises(ConversionError):
        convert(msg(body, content_type="application/cloudevents+json"))


# --- datacontenttype and encoding -----------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml", "image/png"])
def test_datacontenttype_is_always_json(content_type: str | None) -> None:
    assert convert(msg(b"<a/>", content_type=content_type))["datacontenttype"] == (
        "application/json"
    )


def test_encode_event_is_compact_and_sized() -> None:
    event = convert(msg('{"a": [1, 2], "b": "é"}'.encode(), message_id="m"))
    encoded = encode_event(event)
    assert b": " not in encoded
    assert b", " not in encoded
    assert orjson.loads(encoded) == event
    assert event_size(event) == len(encoded) == len(orjson.dumps(event))
    assert "é".encode() in encoded


def test_event_max_bytes() -> None:
    assert EVENT_MAX_BYTES == 64 * 1024
    base = event_size(convert(msg(b"", message_id="m")))
    event = convert(
        msg(
            b"x" * (EVENT_MAX_BYTES - base - len(',"data":{"text":""}')),
            message_id="m",
            content_type="text/plain",
        )
    )
    del event["contenttype"]
    assert event_size(event) == EVENT_MAX_BYTES


def test_encode_event_rejects_unserialisable() -> None:
    with pytest.raises(ConversionError):
        encode_event({"id": "\ud800"})


def test_event_is_json_serialisable_for_odd_messages() -> None:
    m = msg(
        b"\xff" * 10,
        headers={"a": {1: Decimal("1")}, "b": [b"x"], "c": 10**30},
        identity={"props": {"timestamp": datetime(2024, 1, 1)}},
    )
    orjson.loads(encode_event(convert(m)))


# --- issue 5, bad input (cases 9-14): the values the integration tests assert ---------------


def test_amqp_byte_array_and_non_utf8_long_strings_are_base64() -> None:
    # pamqp delivers a byte array (x) as bytearray and a long string (S) that is not UTF-8 as
    # bytes; nested ones end up inside the JSON text of their table or array.
    event = convert(
        msg(
            headers={
                "sig": bytearray(b"\x00\xffabc"),
                "latin": b"caf\xe9",
                "table": {"raw": b"\xff", "x": bytearray(b"\x01")},
                "array": [b"\xe9", bytearray(b"\x01\x02")],
            }
        )
    )
    assert event["sig"] == "AP9hYmM="
    assert event["latin"] == "Y2Fm6Q=="
    assert event["table"] == '{"raw":"/w==","x":"AQ=="}'
    assert event["array"] == '["6Q==","AQI="]'


def test_hashed_id_same_for_bytes_and_bytearray_headers() -> None:
    one = convert(msg(headers={"sig": b"\x00\xff"}))
    two = convert(msg(headers={"sig": bytearray(b"\x00\xff")}))
    assert one["id"] == two["id"]


def test_issue_header_names() -> None:
    with capture_logs() as logs:
        event = convert(
            msg(
                message_id="m-1",
                headers={
                    "X-Correlation-ID": "corr",
                    "tenant_id": "lower",
                    "TENANTID": "upper",
                    "type": "evil.type",
                    "id": "evil-id",
                    **RABBIT_HEADERS,
                },
            )
        )
    assert extensions(event) == {"xcorrelationid": "corr", "tenantid": "upper"}
    assert event["id"] == "m-1"
    assert event["type"] == DEFAULT_TYPE
    collisions = [e for e in logs if e["event"] == "extension_collision"]
    assert [(e["kept"], e["dropped"], e["log_level"]) for e in collisions] == [
        ("TENANTID", "tenant_id", "debug")
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "data"),
    [
        (b"\x00\xff\xfe\x10", "application/octet-stream", {"base64": "AP/+EA=="}),
        ('{"d":"数据✓😀"}'.encode(), "application/json", {"d": "数据✓😀"}),
        ('{"d":"数据✓😀"}'.encode(), None, {"d": "数据✓😀"}),
        (b"caf\xe9", "text/plain; charset=iso-8859-1", {"text": "café"}),
        (b'{"a":1}', "text/plain", {"text": '{"a":1}'}),
        (b'{"a":', "application/json", {"text": '{"a":'}),
        (b'{"a":', None, {"text": '{"a":'}),
        (b'{"a":"\xff', "application/json", {"base64": "eyJhIjoi/w=="}),
    ],
)
def test_issue_bodies(body: bytes, content_type: str | None, data: dict[str, Any]) -> None:
    event = convert(msg(body, content_type=content_type))
    assert event["data"] == data
    assert event.get("contenttype") == content_type
    assert orjson.loads(encode_event(event))["data"] == data


def test_unicode_body_is_sent_as_utf8_not_escaped() -> None:
    event = convert(msg('{"d":"数据✓😀"}'.encode(), content_type="application/json"))
    encoded = encode_event(event)
    assert '"data":{"d":"数据✓😀"}'.encode() in encoded


def test_empty_body_without_content_type_has_no_data_and_no_contenttype() -> None:
    event = convert(msg(b"", message_id="e"))
    assert "data" not in event
    assert extensions(event) == {}


def test_integers_beyond_64_bits_stay_exact() -> None:
    # orjson would read them as floats (1.2345678901234568e+29); the standard library keeps
    # them exact and encode_event writes them when orjson cannot.
    body = (
        b'{"big":123456789012345678901234567890,"neg":-9223372036854775809,'
        b'"u64":18446744073709551615,"f":0.5}'
    )
    event = convert(msg(body, content_type="application/json"))
    assert event["data"] == {
        "big": 123456789012345678901234567890,
        "neg": -9223372036854775809,
        "u64": 18446744073709551615,
        "f": 0.5,
    }
    assert type(event["data"]["big"]) is int
    assert body[:-1] + b"}" in encode_event(event)
    assert event_size(event) == len(encode_event(event))


def test_long_digit_strings_do_not_change_the_data() -> None:
    body = b'{"card":"1234567890123456789012","n":1.25}'
    assert convert(msg(body, content_type="application/json"))["data"] == {
        "card": "1234567890123456789012",
        "n": 1.25,
    }


def test_big_integers_in_other_charsets_and_structured_events() -> None:
    body = '{"big":123456789012345678901234567890}'.encode("utf-16")
    event = convert(msg(body, content_type="application/json; charset=utf-16"))
    assert event["data"] == {"big": 123456789012345678901234567890}
    structured = (
        b'{"specversion":"1.0","id":"i","type":"t","source":"s","data":{"n":99999999999999999999}}'
    )
    event = convert(msg(structured, content_type="application/cloudevents+json"))
    assert event["data"] == {"n": 99999999999999999999}
    assert b'"n":99999999999999999999' in encode_event(event)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", None]
)
def test_utf8_byte_order_mark_is_ignored_for_json(content_type: str | None) -> None:
    event = convert(msg(b'\xef\xbb\xbf{"a":1}', content_type=content_type))
    assert event["data"] == {"a": 1}


def test_byte_order_mark_stays_in_text() -> None:
    event = convert(msg("\ufeffhello".encode(), content_type="text/plain"))
    assert event["data"] == {"text": "\ufeffhello"}


@pytest.mark.parametrize("depth", [200, 254, 300, 800, 1023, 1030])
def test_deeply_nested_json_is_sent_or_text_never_unencodable(depth: int) -> None:
    # orjson reads 1024 levels but writes only 255: a body that parses must still encode.
    body = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    event = convert(msg(body, content_type="application/json"))
    encoded = encode_event(event)
    assert event_size(event) == len(encoded)
    data = event["data"]
    if "text" in data:
        assert data == {"text": body.decode()}
        assert depth > 800
    else:
        assert b'"data":' + body in encoded
        assert depth <= 800


def test_encode_event_still_rejects_what_json_cannot_hold() -> None:
    # The standard-library fallback (here for the big integer) refuses a lone surrogate too.
    with pytest.raises(ConversionError):
        encode_event({"id": "x", "big": 2**70, "bad": "\udc80"})
