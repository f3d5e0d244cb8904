"""The RocketMQ test broker's codec and store (tests/support/rocketmq): wire layouts checked
against the C++ client's fixed positions (``MQDecoder.cpp``) and the Java formulas, and the
retry/DLQ bookkeeping the integration tests rely on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import zlib

import pytest

from tests.support.rocketmq.broker import TestBroker, tag_matches
from tests.support.rocketmq.codec import (
    MAGIC,
    Code,
    Command,
    StoredMessage,
    decode_frame,
    decode_properties,
    decode_stored,
    encode_command,
    encode_properties,
    encode_stored,
    offset_message_id,
    signature,
)
from tests.support.rocketmq.store import DLQ_PREFIX, RETRY_PREFIX, Store


def cpp_request(code: int, ext: dict[str, object], body: bytes = b"", flag: int = 0) -> bytes:
    """A frame as the C++ client writes it: some ext values are JSON numbers."""
    head = json.dumps({"code": code, "language": "CPP", "version": 373, "opaque": 7,
                       "flag": flag, "remark": "", "extFields": ext}).encode()
    return struct.pack(">ii", 4 + len(head) + len(body), len(head)) + head + body


def test_a_cpp_request_decodes_with_numbers_as_their_decimal_text() -> None:
    frame = cpp_request(Code.PULL_MESSAGE, {"queueId": 3, "maxMsgNums": 32, "topic": "t"}, b"xy",
                        flag=2)
    cmd = decode_frame(frame[4:])
    assert (cmd.code, cmd.opaque, cmd.oneway, cmd.body) == (11, 7, True, b"xy")
    assert cmd.ext == {"queueId": "3", "maxMsgNums": "32", "topic": "t"}


def test_a_response_frame_has_json_type_0_and_string_ext_values() -> None:
    response = Command(Code.PULL_MESSAGE, opaque=9).reply(ext={"nextBeginOffset": 12}, body=b"b")
    frame = encode_command(response)
    total, header_field = struct.unpack_from(">ii", frame)
    assert total == len(frame) - 4
    assert header_field >> 24 == 0  # the C++ client reads the whole int as the length
    head = json.loads(frame[8:8 + header_field])
    assert head["flag"] & 1
    assert head["opaque"] == 9
    assert head["code"] == 0
    assert head["extFields"] == {"nextBeginOffset": "12"}
    assert frame.endswith(b"b")


def test_a_rocketmq_serialized_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode_frame(struct.pack(">i", (1 << 24) | 2) + b"{}")


def test_properties_round_trip_and_skip_broken_pairs() -> None:
    props = {"TAGS": "a", "KEYS": "k1 k2", "UNIQ_KEY": "ABC"}
    text = encode_properties(props)
    assert text == "TAGS\x01a\x02KEYS\x01k1 k2\x02UNIQ_KEY\x01ABC\x02"
    assert decode_properties(text + "broken\x02") == props


def test_a_stored_message_has_the_layout_the_cpp_decoder_reads() -> None:
    msg = StoredMessage("orders", 2, 5, 4096, zlib.compress(b"hello"), {"TAGS": "t"},
                        born_timestamp=1_700_000_000_123, store_timestamp=1_700_000_000_456,
                        born_host=("10.0.0.1", 5555), store_host=("127.0.0.1", 10911),
                        flag=0, sys_flag=1, reconsume_times=3)
    data = encode_stored(msg)
    assert struct.unpack_from(">i", data, 0)[0] == len(data)
    assert struct.unpack_from(">I", data, 4)[0] == MAGIC == (0xAABBCCDD ^ (1880681586 + 8))
    assert struct.unpack_from(">q", data, 28)[0] == 4096  # MessagePhysicOffsetPostion
    assert struct.unpack_from(">q", data, 56)[0] == 1_700_000_000_456  # StoreTimestampPostion
    [back] = decode_stored(data + encode_stored(msg))[:1]
    assert back == msg
    assert back.plain_body() == b"hello"


def test_message_ids_prefer_uniq_key_else_the_offset_id() -> None:
    assert offset_message_id(("127.0.0.1", 10911), 255) == "7F00000100002A9F00000000000000FF"
    msg = StoredMessage("t", 0, 0, 255, b"", {}, 0, 0, store_host=("127.0.0.1", 10911))
    assert msg.msg_id == "7F00000100002A9F00000000000000FF"
    msg.properties["UNIQ_KEY"] = "C0A8000100002A9F0000000000000001"
    assert msg.msg_id == "C0A8000100002A9F0000000000000001"


def test_signature_is_hmac_sha1_of_sorted_values_plus_body() -> None:
    ext = {"topic": "t", "AccessKey": "ak", "OnsChannel": "", "Signature": "ignored"}
    expected = base64.b64encode(hmac.new(b"sk", b"akt" + b"BODY", hashlib.sha1).digest()).decode()
    assert signature("sk", ext, b"BODY") == expected


@pytest.mark.parametrize(("expression", "tags", "matches"), [
    ("*", "anything", True), ("", "", True), ("a || b", "b", True), ("a||b", "c", False),
    ("a", "", False),
])
def test_tag_expressions(expression: str, tags: str, matches: bool) -> None:
    assert tag_matches(expression, tags) is matches


async def test_send_back_goes_to_retry_then_to_the_dlq_at_the_limit() -> None:
    store = Store(retry_delay_s=0)
    store.create_topic("orders", 1)
    first = store.append("orders", 0, b"x", {"UNIQ_KEY": "ID1"}, born_timestamp=1,
                         born_host=("127.0.0.1", 1))
    assert store.send_back("g", first.commit_offset, "", 1)
    [retry] = store.messages(RETRY_PREFIX + "g")
    assert (retry.reconsume_times, retry.msg_id) == (1, "ID1")
    assert retry.properties["RETRY_TOPIC"] == "orders"
    assert store.send_back("g", retry.commit_offset, "ID1", 1)
    [dead] = store.messages(DLQ_PREFIX + "g")
    assert dead.reconsume_times == 2
    assert dead.properties["RETRY_TOPIC"] == "orders"
    assert [b.to_dlq for b in store.send_backs] == [False, True]
    assert not store.send_back("g", 123456789, "", 16)


def test_unknown_group_offsets_and_resets() -> None:
    store = Store()
    store.create_topic("orders", 2)
    assert store.consumer_offset("g", "orders", 0) is None
    store.reset_group("g", "orders", 0)
    assert [store.consumer_offset("g", "orders", q) for q in (0, 1)] == [0, 0]
    store.commit("g", "orders", 1, 7)
    store.commit("g", "orders", 1, -1)  # "no offset" is never stored
    assert store.consumer_offset("g", "orders", 1) == 7
    assert Store(unknown_offset_is_zero=True).consumer_offset("g", "orders", 0) == 0


async def test_a_long_poll_is_answered_when_a_message_arrives() -> None:
    broker = TestBroker()
    broker.store.create_topic("orders", 1)
    await broker.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        ext = {"consumerGroup": "g", "topic": "orders", "queueId": 0, "queueOffset": "0",
               "maxMsgNums": 32, "sysFlag": 2, "commitOffset": "0",
               "suspendTimeoutMillis": "5000", "subscription": "*"}
        writer.write(cpp_request(Code.PULL_MESSAGE, ext))
        await asyncio.sleep(0.2)
        broker.store.append("orders", 0, b"late", {}, born_timestamp=1,
                            born_host=("127.0.0.1", 1))
        (length,) = struct.unpack(">i", await reader.readexactly(4))
        reply = decode_frame(await reader.readexactly(length))
        writer.close()
    finally:
        await broker.close()
    assert reply.code == Code.SUCCESS
    assert reply.ext["nextBeginOffset"] == "1"
    assert [m.body for m in decode_stored(reply.body)] == [b"late"]
