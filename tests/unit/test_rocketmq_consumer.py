"""The RocketMQ consumer without a native consumer: configuration errors, the message copy,
the consume-thread handshake (a real thread blocking on its delivery, as a native consume
thread does), and the route check against the test broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.consumers.rocketmq import RocketConsumer, load_driver, name_servers
from bridge.consumers.rocketmq_delivery import (
    CONSUME_SUCCESS,
    RECONSUME_LATER,
    RocketDelivery,
    copy_message,
)
from bridge.consumers.rocketmq_probe import (
    LIKELY_CAUSES,
    RouteProblem,
    check_route,
    master_address,
)
from bridge.errors import ConfigError
from bridge.events import InboundMessage
from bridge.settings import ConnectionSettings, SourceDetail
from tests.support.rabbit import free_port
from tests.support.rocketmq import TestBroker

ROOT = Path(__file__).resolve().parents[2]


class FakeMessage:
    """Quacks like ``rocketmq.client.ReceivedMessage`` (bytes where ctypes gives bytes)."""

    def __init__(self, **kw: Any) -> None:
        self.id = kw.get("id", "UNIQ1")
        self.body = kw.get("body", b'{"a": 1}')
        self.tags = kw.get("tags", b"created")
        self.keys = kw.get("keys", b"order-1")
        self.born_timestamp = kw.get("born_timestamp", 1_700_000_000_123)
        self.reconsume_times = kw.get("reconsume_times", 0)
        self.props: dict[str, bytes] = kw.get("props", {})

    def get_property(self, name: str) -> bytes:
        return self.props.get(name, b"")  # the C layer answers "" for a missing property


def detail(**kw: Any) -> SourceDetail:
    return SourceDetail(**{"group": "g", "topic": "orders", "namesrv_address": "127.0.0.1:9876",
                           **kw})


def test_ssl_enable_is_a_config_error_naming_the_missing_tls() -> None:
    with pytest.raises(ConfigError, match="has no TLS") as err:
        RocketConsumer(detail(ssl_enable=True), ConnectionSettings())
    assert "PLAINTEXT or PERMISSIVE" in str(err.value)


def test_acl_without_keys_and_bad_name_servers_are_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        RocketConsumer(detail(enable_acl=True, namesrv_address="nohost"), ConnectionSettings())
    assert len(err.value.problems) == 2
    assert name_servers("a:1, b:2;c:3") == "a:1;b:2;c:3"


def test_eg_bridge_check_rejects_ssl_with_exit_2(tmp_path: Path) -> None:
    config = {"eventgrid": {"endpoint": "http://127.0.0.1:1", "project_id": "p",
                            "auth": {"none": True}},
              "source": {"name": "s", "channel_id": "c", "type": "ROCKETMQ",
                         "detail": {"group": "g", "topic": "t", "namesrv_address": "h:1",
                                    "ssl_enable": True}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(path)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2
    assert "ssl_enable" in done.stderr
    assert "no TLS" in done.stderr


def test_a_missing_client_names_the_install_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rocketmq", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as err:
        load_driver()
    assert "pip install -e '.[rocketmq]'" in str(err.value)
    assert "python -m bridge.consumers.rocketmq_install" in str(err.value)
    assert "python -m bridge.consumers.rocketmq_install" in str(err.value)


def test_copy_message_maps_id_tags_keys_time_and_named_properties() -> None:
    msg = FakeMessage(props={"color": b"red", "ORIGIN_MESSAGE_ID": b""}, reconsume_times=2)
    message, times = copy_message(msg, ["color", "absent"])
    assert times == 2
    assert message.message_id == "UNIQ1"
    assert message.subject == "created"
    assert message.keys == "order-1"
    assert message.headers == {"color": "red"}
    assert message.timestamp is not None
    assert message.timestamp.isoformat() == (
        "2023-11-14T22:13:20.123000+00:00")
    assert message.body == b'{"a": 1}'
    empty, _ = copy_message(FakeMessage(body=None, tags=b"", keys=b"", born_timestamp=0), [])
    assert (empty.body, empty.subject, empty.keys, empty.timestamp) == (b"", None, None, None)


def test_a_retry_without_uniq_key_keeps_the_original_id() -> None:
    msg = FakeMessage(id="OFFSETID2", props={"ORIGIN_MESSAGE_ID": b"OFFSETID1"})
    assert copy_message(msg, [])[0].message_id == "OFFSETID1"


def test_a_delivery_settles_once() -> None:
    delivery = RocketDelivery(InboundMessage(body=b"", received_at=None), 1)  # type: ignore[arg-type]
    assert delivery.redelivered
    assert delivery.status == RECONSUME_LATER
    delivery.ack()
    delivery.dead_letter("eg_rejected", "EG.00513000")
    assert delivery.status == CONSUME_SUCCESS
    assert delivery.wait(0)
    rejected = RocketDelivery(InboundMessage(body=b"", received_at=None), 0)  # type: ignore[arg-type]
    rejected.dead_letter("eg_rejected", "x")
    rejected.ack()
    assert rejected.status == RECONSUME_LATER
    assert not rejected.redelivered


@pytest.fixture
async def consumer() -> RocketConsumer:
    """A consumer wired to this loop, without a native consumer (its callback is driven
    from plain threads)."""
    c = RocketConsumer(detail(), ConnectionSettings(properties=["color"]), wait_timeout_s=2)
    c._loop = asyncio.get_running_loop()
    return c


async def call_back(consumer: RocketConsumer, msg: Any) -> int:
    """Run the native callback on another thread, as the client does."""
    return await asyncio.to_thread(consumer._on_message, msg)


async def test_the_thread_waits_for_the_ack_and_then_returns_success(
    consumer: RocketConsumer,
) -> None:
    seen: list[Any] = []

    def handler(delivery: Any) -> None:
        assert threading.current_thread() is threading.main_thread()  # the loop's thread
        seen.append(delivery)
        asyncio.get_running_loop().call_later(0.2, delivery.ack)

    consumer._handler = handler
    assert await call_back(consumer, FakeMessage(props={"color": b"blue"})) == CONSUME_SUCCESS
    assert seen[0].message.headers == {"color": "blue"}


@pytest.mark.parametrize("settle", ["requeue", "dead_letter", "raise", "never"])
async def test_anything_but_an_ack_returns_reconsume_later(
    consumer: RocketConsumer, settle: str,
) -> None:
    def handler(delivery: Any) -> None:
        if settle == "raise":
            raise RuntimeError("pipeline bug")
        if settle == "requeue":
            delivery.requeue()
        elif settle == "dead_letter":
            delivery.dead_letter("event_too_large", "")

    consumer._handler = handler
    assert await call_back(consumer, FakeMessage()) == RECONSUME_LATER


async def test_a_broken_message_never_raises_into_the_native_client(
    consumer: RocketConsumer,
) -> None:
    consumer._handler = lambda d: d.ack()
    assert await call_back(consumer, object()) == RECONSUME_LATER


async def test_after_the_stop_flag_callbacks_wait_for_the_shutdown_and_hand_nothing_over(
    consumer: RocketConsumer,
) -> None:
    handed: list[Any] = []
    consumer._handler = handed.append
    await consumer.stop_intake()
    pending = asyncio.ensure_future(call_back(consumer, FakeMessage()))
    await asyncio.sleep(0.3)
    assert not pending.done()  # held until the native shutdown has stopped the consume pool
    await consumer.close()
    assert await pending == RECONSUME_LATER
    assert handed == []
    assert consumer.attached is False


async def test_close_gives_back_messages_still_held(consumer: RocketConsumer) -> None:
    consumer._handler = lambda d: None  # the pipeline never settles it
    pending = asyncio.ensure_future(call_back(consumer, FakeMessage()))
    await asyncio.sleep(0.3)
    await consumer.close()
    assert await pending == RECONSUME_LATER


# -- route check --------------------------------------------------------------------------


@pytest.fixture
async def broker() -> Any:
    server = TestBroker(acl={"ak-1": "sk-1"})
    server.store.create_topic("orders")
    await server.start()
    yield server
    await server.close()


async def test_route_check_passes_with_the_right_keys(broker: TestBroker) -> None:
    await check_route(f"127.0.0.1:{free_port()};{broker.address}", "orders", "g",
                      ("ak-1", "sk-1"))
    assert broker.acl_rejections == 0


@pytest.mark.parametrize(("namesrv", "topic", "keys", "step"), [
    ("closed", "orders", ("ak-1", "sk-1"), "no name server answered"),
    ("broker", "nope", ("ak-1", "sk-1"), "does not know it"),
    ("broker", "orders", ("ak-1", "wrong-sk"), "Check signature failed"),
    ("broker", "orders", ("ak-unknown", "sk-1"), "No acl config"),
    ("broker", "orders", None, "No acl config"),
])
async def test_route_problems_name_the_step_and_the_likely_causes(
    broker: TestBroker, namesrv: str, topic: str, keys: tuple[str, str] | None, step: str,
) -> None:
    address = broker.address if namesrv == "broker" else f"127.0.0.1:{free_port()}"
    with pytest.raises(RouteProblem) as err:
        await check_route(address, topic, "g", keys, timeout_s=2)
    text = str(err.value)
    assert step in text
    assert LIKELY_CAUSES in text
    for secret in keys or ():
        assert secret not in text


def test_routes_with_bare_numeric_broker_ids_parse() -> None:
    body = (b'{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},'
            b'"brokerName":"b"}],"queueDatas":[{"brokerName":"b","readQueueNums":4}]}')
    assert master_address(body) == "10.0.0.1:10911"


def test_the_example_config_builds_a_rocketmq_consumer() -> None:
    from bridge.runtime import build_consumer  # noqa: PLC0415
    from bridge.settings import load_settings  # noqa: PLC0415

    env = {"EG_PROJECT_ID": "0123456789abcdef0123456789abcdef", "EG_CHANNEL_ID": "c",
           "EG_AK": "ak", "EG_SK": "sk"}
    settings = load_settings(ROOT / "config" / "rocketmq.yaml", env)
    consumer = build_consumer(settings)
    assert isinstance(consumer, RocketConsumer)
    assert consumer.describe() == {"type": "ROCKETMQ", "connected": False, "topic": "orders",
                                   "group": "eg-bridge-orders", "namesrv": "127.0.0.1:9876"}
