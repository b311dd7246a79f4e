"""Key epochs of encrypted networks: which epoch a host sends with and which it accepts, over time,
and the SAs that makes (both ends of a pair compute the same SA without talking)."""

from __future__ import annotations

from overlaynet.agent.netkeys import EpochSecret, plan, sas_for
from overlaynet.dataplane import esp_keys

A, B, C = "198.18.0.1", "198.18.0.2", "198.18.0.3"
SWITCH, OVERLAP = 5.0, 30.0


def secrets(*epochs: int, created_at: float = 1000.0) -> dict[int, EpochSecret]:
    return {e: EpochSecret("blue", e, bytes([e]) * 32, created_at) for e in epochs}


def test_a_new_network_sends_and_accepts_its_only_epoch_at_once() -> None:
    p = plan(secrets(1), seen_at=50.0, now_mono=50.0, now_wall=1000.0, switch_delay=SWITCH, overlap=OVERLAP)
    assert p is not None and (p.tx, p.rx, p.current) == (1, (1,), 1)
    assert plan({}, 0, 0, 0, SWITCH, OVERLAP) is None  # no secret yet: nothing to send with


def test_rotation_accepts_new_at_once_switches_after_the_delay_and_drops_old_after_the_overlap() -> None:
    eps = secrets(1, 2)  # epoch 2 made at wall 1000, seen here at monotonic 50
    def at(dt: float):
        return plan(eps, seen_at=50.0, now_mono=50.0 + dt, now_wall=1000.0 + dt, switch_delay=SWITCH,
                    overlap=OVERLAP)
    assert (at(0).tx, at(0).rx) == (1, (2, 1))  # peers may not have epoch 2 yet: keep sending 1
    assert (at(SWITCH - 0.1).tx, at(SWITCH - 0.1).rx) == (1, (2, 1))
    assert (at(SWITCH).tx, at(SWITCH).rx) == (2, (2, 1))  # send 2; still accept 1 from late peers
    assert (at(SWITCH + OVERLAP).tx, at(SWITCH + OVERLAP).rx) == (2, (2,))  # epoch 1 rejected from now


def test_a_host_that_learns_an_epoch_late_waits_from_its_arrival() -> None:
    eps = secrets(1, 2, created_at=1000.0)
    late = plan(eps, seen_at=100.0, now_mono=100.5, now_wall=1060.0, switch_delay=SWITCH, overlap=OVERLAP)
    assert late is not None and late.tx == 1 and late.rx == (2, 1)


def test_the_sas_of_a_pair_agree_at_both_ends() -> None:
    eps = secrets(1, 2)
    p = plan(eps, 50.0, 50.0 + SWITCH, 1000.0 + SWITCH, SWITCH, OVERLAP)
    assert p is not None
    at_a = sas_for(p, eps, 4097, A, {B, C})
    at_b = sas_for(p, eps, 4097, B, {A, C})
    out_a_to_b = next(sa for sa in at_a if sa["dir"] == "out" and sa["peer"] == B)
    in_b_from_a = [sa for sa in at_b if sa["dir"] == "in" and sa["peer"] == A]
    assert {sa["epoch"] for sa in in_b_from_a} == {1, 2}
    match = next(sa for sa in in_b_from_a if sa["epoch"] == out_a_to_b["epoch"])
    assert (match["spi"], match["key"], match["salt"]) == (out_a_to_b["spi"], out_a_to_b["key"], out_a_to_b["salt"])
    expected = esp_keys.derive_sa(eps[2].secret, 4097, 2, A, B)
    assert (out_a_to_b["spi"], out_a_to_b["key"], out_a_to_b["salt"]) == (expected.spi, expected.key, expected.salt)
    # One outbound SA per peer, an inbound one per accepted epoch per peer.
    assert sorted((sa["dir"], sa["peer"]) for sa in at_a if sa["dir"] == "out") == [("out", B), ("out", C)]
    assert len([sa for sa in at_a if sa["dir"] == "in"]) == 4


def test_a_malformed_record_is_ignored() -> None:
    assert EpochSecret.from_dict({"network": "blue", "epoch": 1, "secret": "00" * 8, "created_at": 1}) is None
    assert EpochSecret.from_dict({"network": "blue", "epoch": 0, "secret": "00" * 32, "created_at": 1}) is None
    assert EpochSecret.from_dict({"network": "blue", "secret": "zz"}) is None


def test_an_epoch_that_replaces_a_broken_one_is_used_alone_at_once() -> None:
    eps = secrets(1, 2)
    eps[2] = EpochSecret("blue", 2, eps[2].secret, eps[2].created_at, replaces_broken=True)
    p = plan(eps, seen_at=50.0, now_mono=50.0, now_wall=1000.0, switch_delay=SWITCH, overlap=OVERLAP)
    assert p is not None and (p.tx, p.rx) == (2, (2,))
    assert EpochSecret.from_dict(eps[2].to_dict()) == eps[2]
    assert "replaces_broken" not in secrets(1)[1].to_dict()  # an ordinary record stays as it was
