"""RocketMQ 4.x remoting wire formats for the test broker (shared/rocketmq.md §2).

Pure functions, no I/O:

* frames: ``int32 total_len`` (everything after it), ``int32 header_field`` (serialize type in
  the high byte, header length in the low 24 bits), JSON header, body; big-endian;
* message properties: ``key\\x01value\\x02`` repeated;
* stored messages, as a PULL reply body carries them (Java ``MessageDecoder``, C++
  ``MQDecoder``), and the offset message id (store host + commit-log offset, 32 hex digits);
* the ACL signature: ``Base64(HmacSHA1(secret, values of the ext fields sorted by key, except
  Signature, concatenated, + body))`` (Java ``AclUtils.combineRequestContent``, C++
  ``ClientRPCHook::signCommand``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

MAGIC = 0xDAA320A7
"""Stored-message magic code (Java ``0xAABBCCDD ^ (1880681586 + 8)``); C++ skips it."""
FLAG_RESPONSE = 1
FLAG_ONEWAY = 2
COMPRESSED = 1
"""sysFlag bit 0: the body is zlib-compressed."""
_FRAME_HEAD = struct.Struct(">ii")


class Code:
    """Request and response codes used by the C++ client (``MQProtos.h``)."""

    SEND_MESSAGE = 10
    PULL_MESSAGE = 11
    QUERY_CONSUMER_OFFSET = 14
    UPDATE_CONSUMER_OFFSET = 15
    GET_MAX_OFFSET = 30
    GET_MIN_OFFSET = 31
    HEART_BEAT = 34
    UNREGISTER_CLIENT = 35
    CONSUMER_SEND_MSG_BACK = 36
    GET_CONSUMER_LIST_BY_GROUP = 38
    GET_ROUTEINFO_BY_TOPIC = 105
    SEND_MESSAGE_V2 = 310
    # responses
    SUCCESS = 0
    SYSTEM_ERROR = 1
    REQUEST_CODE_NOT_SUPPORTED = 3
    NO_PERMISSION = 16
    TOPIC_NOT_EXIST = 17
    PULL_NOT_FOUND = 19
    PULL_RETRY_IMMEDIATELY = 20
    PULL_OFFSET_MOVED = 21
    QUERY_NOT_FOUND = 22


V2_KEYS = {"a": "producerGroup", "b": "topic", "c": "defaultTopic",
           "d": "defaultTopicQueueNums", "e": "queueId", "f": "sysFlag", "g": "bornTimestamp",
           "h": "flag", "i": "properties", "j": "reconsumeTimes", "k": "unitMode",
           "l": "consumeRetryTimes", "m": "batch"}
"""SEND_MESSAGE_V2 header keys -> the SEND_MESSAGE names."""


def ext_text(value: Any) -> str:
    """An ext field value as the signer saw it: the C++ client writes some numbers as JSON
    numbers but signs their decimal text (``UtilAll::to_string``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return str(value)


@dataclass
class Command:
    """One remoting command (request or response).

    Attributes:
        code: request code, or response code in a response.
        opaque: request id; a response echoes its request's.
        flag: bit 0 response, bit 1 one-way.
        remark: error text in responses.
        ext: ``extFields``; values as strings (numbers from the C++ client are converted).
        body: raw body bytes.
        language: "CPP" from the C++ client; responses say "JAVA" like the real broker.
    """

    code: int
    opaque: int = 0
    flag: int = 0
    remark: str = ""
    ext: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    language: str = "JAVA"

    @property
    def oneway(self) -> bool:
        """The sender expects no response."""
        return bool(self.flag & FLAG_ONEWAY)

    def reply(self, code: int = Code.SUCCESS, *, remark: str = "",
              ext: dict[str, Any] | None = None, body: bytes = b"") -> Command:
        """A response to this request (every ext value sent as a JSON string: the C++ client
        only reads string values, ``CommandHeader.cpp``)."""
        return Command(code, self.opaque, FLAG_RESPONSE, remark,
                       {k: ext_text(v) for k, v in (ext or {}).items()}, body)


def encode_command(cmd: Command) -> bytes:
    """One frame: lengths, JSON header (serialize type 0 in the high byte), body."""
    header = json.dumps({"code": cmd.code, "language": cmd.language, "version": 373,
                         "opaque": cmd.opaque, "flag": cmd.flag, "remark": cmd.remark,
                         "extFields": cmd.ext, "serializeTypeCurrentRPC": "JSON"},
                        separators=(",", ":")).encode()
    return _FRAME_HEAD.pack(4 + len(header) + len(cmd.body), len(header)) + header + cmd.body


def decode_frame(frame: bytes) -> Command:
    """Decode a frame without its leading ``total_len`` field.

    Raises:
        ValueError: not a JSON-serialized command.
    """
    (header_field,) = struct.unpack_from(">i", frame)
    if header_field >> 24 != 0:
        raise ValueError(f"serialize type {header_field >> 24} is not JSON")
    length = header_field & 0xFFFFFF
    head = json.loads(frame[4:4 + length])
    ext = {k: ext_text(v) for k, v in (head.get("extFields") or {}).items() if v is not None}
    return Command(int(head["code"]), int(head.get("opaque", 0)), int(head.get("flag", 0)),
                   head.get("remark") or "", ext, frame[4 + length:],
                   head.get("language", ""))


def decode_properties(text: str) -> dict[str, str]:
    """``k\\x01v\\x02...`` -> dict (pairs without a separator are skipped, as C++ does)."""
    props: dict[str, str] = {}
    for pair in text.split("\x02"):
        key, sep, value = pair.partition("\x01")
        if sep and key:
            props[key] = value
    return props


def encode_properties(props: dict[str, str]) -> str:
    """dict -> ``k\\x01v\\x02...``."""
    return "".join(f"{k}\x01{v}\x02" for k, v in props.items())


def _host(address: tuple[str, int]) -> bytes:
    return socket.inet_aton(address[0]) + struct.pack(">i", address[1])


def offset_message_id(store_host: tuple[str, int], commit_offset: int) -> str:
    """The offset message id: store IPv4, port (4 bytes), commit-log offset (8), hex upper."""
    return (_host(store_host) + struct.pack(">q", commit_offset)).hex().upper()


@dataclass
class StoredMessage:
    """A message as the broker keeps it; :func:`encode_stored` gives the PULL wire form."""

    topic: str
    queue_id: int
    queue_offset: int
    commit_offset: int
    body: bytes
    properties: dict[str, str]
    born_timestamp: int
    store_timestamp: int
    born_host: tuple[str, int] = ("127.0.0.1", 0)
    store_host: tuple[str, int] = ("127.0.0.1", 0)
    flag: int = 0
    sys_flag: int = 0
    reconsume_times: int = 0

    @property
    def msg_id(self) -> str:
        """``UNIQ_KEY`` when the producer set one, else the offset id (C++ ``MQDecoder``)."""
        return self.properties.get("UNIQ_KEY") or offset_message_id(self.store_host,
                                                                     self.commit_offset)

    @property
    def tags(self) -> str:
        """The ``TAGS`` property ("" when none)."""
        return self.properties.get("TAGS", "")

    def plain_body(self) -> bytes:
        """The body, inflated when the producer compressed it."""
        return zlib.decompress(self.body) if self.sys_flag & COMPRESSED else self.body


def encode_stored(m: StoredMessage) -> bytes:
    """The stored layout of shared/rocketmq.md §2 "Pull reply", total size included."""
    topic = m.topic.encode()
    props = encode_properties(m.properties).encode()
    tail = (struct.pack(">i", len(m.body)) + m.body + struct.pack(">B", len(topic)) + topic
            + struct.pack(">h", len(props)) + props)
    head = struct.pack(">IiiiqqiQ", MAGIC, zlib.crc32(m.body) & 0x7FFFFFFF, m.queue_id, m.flag,
                       m.queue_offset, m.commit_offset, m.sys_flag, m.born_timestamp)
    head += _host(m.born_host) + struct.pack(">q", m.store_timestamp) + _host(m.store_host)
    head += struct.pack(">iq", m.reconsume_times, 0)
    return struct.pack(">i", 4 + len(head) + len(tail)) + head + tail


def decode_stored(data: bytes) -> list[StoredMessage]:
    """Inverse of :func:`encode_stored` over a concatenation (for the codec's own tests)."""
    out: list[StoredMessage] = []
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        rec = data[pos:pos + size]
        _, _, _, qid, flag, qoff, coff, sysf, born = struct.unpack_from(">iIiiiqqiQ", rec)
        bhost = (socket.inet_ntoa(rec[48:52]), struct.unpack_from(">i", rec, 52)[0])
        (store_ts,) = struct.unpack_from(">q", rec, 56)
        shost = (socket.inet_ntoa(rec[64:68]), struct.unpack_from(">i", rec, 68)[0])
        (recons,) = struct.unpack_from(">i", rec, 72)
        (blen,) = struct.unpack_from(">i", rec, 84)
        body = rec[88:88 + blen]
        p = 88 + blen
        tlen = rec[p]
        topic = rec[p + 1:p + 1 + tlen].decode()
        p += 1 + tlen
        (plen,) = struct.unpack_from(">h", rec, p)
        props = decode_properties(rec[p + 2:p + 2 + plen].decode())
        out.append(StoredMessage(topic, qid, qoff, coff, body, props, born, store_ts, bhost,
                                 shost, flag, sysf, recons))
        pos += size
    return out


def signature(secret_key: str, ext: dict[str, str], body: bytes) -> str:
    """The ACL signature a request must carry in ``ext["Signature"]``."""
    content = "".join(v for k, v in sorted(ext.items()) if k != "Signature").encode() + body
    digest = hmac.new(secret_key.encode(), content, hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
