"""Local Huawei Cloud EventGrid API emulator (shared/design.md §9).

Public API::

    config = EmulatorConfig(port=0, channels={"orders": "4d9c..."})
    server = await start_emulator(config)      # server.url -> "http://127.0.0.1:41234"
    ...
    await server.close()

``run_emulator(config)`` serves until SIGTERM/SIGINT; ``create_app(config)`` gives the bare
:class:`aiohttp.web.Application`. Behaviour and choices: :mod:`bridge.emulator.app`.
"""

from bridge.emulator.app import DEFAULT_PROJECT_ID, EmulatorConfig, create_app
from bridge.emulator.server import EmulatorServer, run_emulator, start_emulator
from bridge.emulator.store import default_channel_id

__all__ = [
    "DEFAULT_PROJECT_ID",
    "EmulatorConfig",
    "EmulatorServer",
    "create_app",
    "default_channel_id",
    "run_emulator",
    "start_emulator",
]
