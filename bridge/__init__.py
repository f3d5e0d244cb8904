"""eg-bridge: bridge message brokers into Huawei Cloud EventGrid as CloudEvents."""

__version__ = "0.1.0"
