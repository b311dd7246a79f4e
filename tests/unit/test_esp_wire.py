"""overlaynet.dataplane.esp_wire (what the control side uses for MTUs) agrees with the C codec."""

from __future__ import annotations

import pytest

from overlaynet.dataplane import esp, esp_wire

pytestmark = pytest.mark.unit


def test_constants_match_the_c_codec() -> None:
    assert (esp_wire.PORT, esp_wire.KEY_LEN, esp_wire.SALT_LEN, esp_wire.MIN_SPI) == \
        (esp.PORT, esp.KEY_LEN, esp.SALT_LEN, esp.MIN_SPI)
    assert (esp_wire.ESP_OVERHEAD_FIXED, esp_wire.ESP_OVERHEAD_MAX) == (esp.OVERHEAD_FIXED, esp.OVERHEAD_MAX) == (42, 45)
    assert esp_wire.REPLAY_WINDOW == esp.REPLAY_WINDOW


@pytest.mark.parametrize("underlay", [*range(200, 240), 576, 1280, *range(1490, 1510), 9000, 65535])
def test_inner_mtu_matches_the_c_codec_and_fills_the_underlay(underlay: int) -> None:
    mtu = esp_wire.inner_mtu(underlay)
    assert mtu == esp.inner_mtu(underlay)
    assert esp_wire.outer_len(mtu) <= underlay < esp_wire.outer_len(mtu + 1)
    for n in range(0, 64):
        assert esp_wire.sealed_len(n) == esp.sealed_len(n)


def test_a_1500_byte_underlay_gives_1408() -> None:
    assert esp_wire.inner_mtu(1500) == 1408 and esp_wire.outer_len(1408) == 1500
