"""The gateway inside the worker (``CITYGRID_GATEWAY_IN_WORKER=true``): an embedded chdb store is held by one
process, so with chdb the gateway shares the worker's store instead of opening its own (``make demo``)."""

from __future__ import annotations

from typing import Any

import mode

from streams.settings import Settings


class GatewayService(mode.Service):
    def __init__(self, settings: Settings, store: Any, knowledge: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        from streams.gateway.app import GatewayRunner, build_gateway

        self.runner = GatewayRunner(build_gateway(settings, store, knowledge))

    async def on_start(self) -> None:
        await self.runner.start()

    async def on_stop(self) -> None:
        await self.runner.stop()
