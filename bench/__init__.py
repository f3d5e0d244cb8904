"""eg-bridge benchmark (issue 7): throughput, latency, CPU and memory of ``eg-bridge run``
side by side with a raw aio-pika ceiling and a naive consume-POST-ack loop, measured in one run
on one private RabbitMQ node and one EG emulator process. Run ``python -m bench --help``.
"""
