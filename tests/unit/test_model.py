import pytest

from overlaynet import model
from overlaynet.errors import BadRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["blue", "a", "net-1.prod_x", "9lives"])
def test_valid_names(name):
    assert model.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "has space", "a/b", "x" * 64, None, 5])
def test_invalid_names_say_what_is_allowed(name):
    with pytest.raises(BadRequest, match="invalid network name"):
        model.validate_name(name)


def test_subnet_with_host_bits_suggests_the_network():
    with pytest.raises(BadRequest, match=r"did you mean 198\.19\.1\.0/24"):
        model.validate_subnet("198.19.1.7/24")


@pytest.mark.parametrize("subnet", ["nonsense", "198.19.1.0/33", "fd00::/64", None])
def test_bad_subnets(subnet):
    with pytest.raises(BadRequest):
        model.validate_subnet(subnet)


def test_subnet_too_small():
    with pytest.raises(BadRequest, match="too small"):
        model.validate_subnet("198.19.1.0/31")


@pytest.mark.parametrize("vni", [0, -1, 16777216, "7", True, 1.5])
def test_vni_out_of_range(vni):
    with pytest.raises(BadRequest, match="VNI"):
        model.validate_vni(vni)


def test_vni_bounds_accepted():
    assert model.validate_vni(1) == 1
    assert model.validate_vni(16777215) == 16777215


def test_auto_vni_is_stable_and_skips_taken():
    first = model.auto_vni("blue", set())
    assert model.auto_vni("blue", set()) == first
    assert model.AUTO_VNI_FIRST <= first <= model.MAX_VNI
    assert model.auto_vni("blue", {first}) != first


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "00:00:00:00:00:00", "zz:00:00:00:00:00", "02:00:00:00:00"])
def test_bad_macs(mac):
    with pytest.raises(BadRequest, match="MAC"):
        model.validate_mac(mac)


def test_mac_for_is_unicast_local_and_stable():
    mac = model.mac_for("abc123abc123")
    assert mac == model.mac_for("abc123abc123")
    assert model.validate_mac(mac) == mac
    assert int(mac[:2], 16) & 0x02


def test_network_roundtrip():
    net = model.Network(name="b", vni=10, subnet="198.19.1.0/24", mtu=1450, options={"x": "1"})
    assert model.Network.from_dict(net.to_dict()) == net


def test_endpoint_roundtrip():
    ep = model.Endpoint(id="a" * 32, network="b", ip="198.19.1.2", prefixlen=24, mac="02:00:00:00:00:01",
                        ifname="eth0", netns="/run/netns/x", mtu=1450, host="h", vtep="198.18.0.1")
    assert model.Endpoint.from_dict(ep.to_dict()) == ep
    assert ep.address_cidr == "198.19.1.2/24"


def test_parse_mac_is_the_one_mac_syntax():
    assert model.parse_mac("02-00-C6-13-01-02") == "02:00:c6:13:01:02"
    for bad in ("02:00:c6:13:01", "02:00:c6:13:01:0g", "0200c6130102", None, 2):
        with pytest.raises(ValueError, match="invalid MAC"):
            model.parse_mac(bad)
    assert model.parse_mac("01:00:5e:00:00:01") == "01:00:5e:00:00:01"  # syntax only: multicast parses
    with pytest.raises(BadRequest, match="multicast"):
        model.validate_mac("01:00:5e:00:00:01")  # but is no endpoint's MAC
