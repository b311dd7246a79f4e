import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.errors import BadRequest, Conflict
from overlaynet.ipam import AddressPool

pytestmark = pytest.mark.unit


def test_network_and_broadcast_are_never_handed_out():
    pool = AddressPool("198.19.1.0/30")
    first = pool.first_free([])
    second = pool.first_free([first])
    assert {first, second} == {"198.19.1.1", "198.19.1.2"}
    assert pool.first_free([first, second]) is None  # full


def test_lowest_free_first_and_released_addresses_reused():
    pool = AddressPool("198.19.1.0/24")
    assert pool.first_free([]) == "198.19.1.1"
    assert pool.first_free(["198.19.1.1", "198.19.1.3"]) == "198.19.1.2"
    assert pool.first_free([], within=ipaddress.IPv4Network("198.19.1.16/28")) == "198.19.1.16"


def test_gateway_is_reserved():
    pool = AddressPool("198.19.1.0/24", gateway="198.19.1.1")
    assert pool.first_free([]) == "198.19.1.2"
    with pytest.raises(Conflict, match="gateway"):
        pool.check_requested("198.19.1.1", [])


def test_requested_address_rules():
    pool = AddressPool("198.19.1.0/24")
    assert pool.check_requested("198.19.1.50", []) == "198.19.1.50"
    with pytest.raises(BadRequest, match="outside"):
        pool.check_requested("198.19.2.5", [])
    with pytest.raises(Conflict, match="already in use"):
        pool.check_requested("198.19.1.50", ["198.19.1.50"])
    with pytest.raises(BadRequest, match="broadcast"):
        pool.check_requested("198.19.1.255", [])
    with pytest.raises(BadRequest, match="invalid IP"):
        pool.check_requested("198.19.1.999", [])


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=30), st.integers(min_value=24, max_value=29))
def test_never_hands_out_an_address_twice(requests, prefixlen):
    pool = AddressPool(f"198.19.0.0/{prefixlen}")
    used: list[str] = []
    for _ in requests:
        addr = pool.first_free(used)
        if addr is None:
            assert len(used) == pool.network.num_addresses - len(pool.reserved)
            break
        assert addr not in used
        ip = ipaddress.IPv4Address(addr)
        assert ip in pool.network and ip not in pool.reserved
        used.append(addr)


def test_blocks_cover_the_subnet_in_at_least_four_parts():
    from overlaynet import ipam

    assert ipam.blocks("198.19.0.0/24")[:2] == ["198.19.0.0/28", "198.19.0.16/28"]
    assert len(ipam.blocks("198.19.0.0/24")) == 16
    assert len(ipam.blocks("198.19.0.0/29")) == 4
    assert ipam.blocks("198.19.0.0/30") == [f"198.19.0.{i}/32" for i in range(4)]
    assert len(ipam.blocks("198.19.0.0/16")) == 4096
    assert ipam.block_of("198.19.0.0/24", "198.19.0.17") == "198.19.0.16/28"


def test_block_order_is_a_rotation_that_depends_on_the_host():
    from overlaynet import ipam

    a = ipam.block_order("198.19.0.0/24", "host-a")
    assert sorted(a) == sorted(ipam.blocks("198.19.0.0/24"))
    assert a == ipam.block_order("198.19.0.0/24", "host-a")
    starts = {ipam.block_order("198.19.0.0/24", f"host-{i}")[0] for i in range(10)}
    assert len(starts) > 3


@given(st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.sampled_from("abcde")), min_size=1, max_size=6))
def test_claim_winner_is_order_independent(claims):
    from overlaynet import ipam

    assert ipam.claim_winner(claims) == ipam.claim_winner(list(reversed(claims)))
    assert ipam.claim_winner(claims) == min(claims)[1]
