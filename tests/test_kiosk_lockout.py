"""The short-code lockout survives a kiosk restart (real nodes on 127.0.0.1, real SQLCipher
stores): wrong attempts before a restart still count after it, and a lock stays on."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pid.kiosks import KiosksError
from tests.test_kiosk_nodes import kiosk_code, kiosk_config, pairable_via_loopback, running_node


async def test_wrong_short_codes_and_the_lock_survive_a_kiosk_restart(tmp_path: Path) -> None:
    config = kiosk_config(attempts_per_code=10, max_failures=3, lockout_s=600)
    tv_home = tmp_path / "tv"
    async with running_node(tmp_path / "mallory", "Mallory") as mallory:

        async def wrong_code() -> None:
            assert tv.node.kiosk is not None
            right = (await tv.node.kiosk.status()).short_code
            with pytest.raises(KiosksError, match="wrong short code"):
                await mallory.node.kiosks.pair(None, f"{(int(right) + 1) % 1_000_000:06d}")

        async with running_node(tv_home, "TV", config) as tv:
            pairable_via_loopback(mallory.node, tv.node)
            for _ in range(2):
                await wrong_code()
        async with running_node(tv_home, "TV", config) as tv:
            pairable_via_loopback(mallory.node, tv.node)
            assert tv.node.kiosk is not None
            assert (await tv.node.kiosk.status()).locked_for_s == 0
            await wrong_code()  # the third within the window, counting the two before the restart
            assert (await tv.node.kiosk.status()).locked_for_s > 500
        async with running_node(tv_home, "TV", config) as tv:
            pairable_via_loopback(mallory.node, tv.node)
            assert tv.node.kiosk is not None
            status = await tv.node.kiosk.status()
            assert 500 < status.locked_for_s <= 600
            with pytest.raises(KiosksError, match=r"locked .*try again in \d+ s"):
                await mallory.node.kiosks.pair(None, status.short_code)
            assert await mallory.node.kiosks.list_kiosks() == []
            # the QR code still works, and nothing else was changed by the refused attempts
            paired = await mallory.node.kiosks.pair(await kiosk_code(tv.node), None)
            assert paired["role"] == "owner"
