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


@pytest.mark.parametrize(("subnet", "meaning"), [
    ("127.0.0.0/24", "loopback"), ("127.255.255.0/30", "loopback"), ("224.0.0.0/24", "multicast"),
    ("239.1.0.0/16", "multicast"), ("240.0.0.0/24", "reserved"), ("255.255.255.0/24", "reserved"),
    ("0.0.0.0/8", "'this network'"), ("0.0.0.0/0", "'this network'"), ("96.0.0.0/3", "loopback"),
])
def test_subnets_that_cannot_carry_containers_are_refused(subnet, meaning):
    with pytest.raises(BadRequest, match=f"overlaps {meaning}") as e:
        model.validate_subnet(subnet)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("subnet", ["10.0.0.0/8", "198.19.1.0/24", "1.0.0.0/24", "223.255.255.0/24"])
def test_ordinary_subnets_are_accepted(subnet):
    assert str(model.validate_subnet(subnet)) == subnet


def test_a_subnet_overlapping_the_underlay_is_refused():
    subnet = model.validate_subnet("198.18.0.0/24")
    with pytest.raises(BadRequest, match=r"overlaps this host's underlay network 198\.18\.0\.0/16"):
        model.check_clear_of_underlay(subnet, ["198.18.0.0/16"], ["198.18.0.1"])
    with pytest.raises(BadRequest, match=r"contains the underlay address 10\.9\.0\.7"):
        model.check_clear_of_underlay(model.validate_subnet("10.9.0.0/24"), ["198.18.0.0/16"], ["10.9.0.7"])
    model.check_clear_of_underlay(model.validate_subnet("198.19.1.0/24"), ["198.18.0.0/16"], ["198.18.0.1"])


@pytest.mark.parametrize("mac", ["02:0d:00:00:10:01", "02:0D:00:FF:FF:FF", "02:0d:00:00:00:00"])
def test_the_anycast_gateway_macs_are_reserved(mac):
    with pytest.raises(BadRequest, match="reserved for overlaynet's anycast gateways"):
        model.validate_mac(mac)
    assert model.validate_mac("02:0d:01:00:10:01") == "02:0d:01:00:10:01"


def test_derived_macs_never_fall_in_the_gateways_range():
    # sha256("endpoint029789") starts 0d 00 9c: its first-choice MAC would be 02:0d:00:9c:2d:05.
    assert model.mac_for("endpoint029789") == "02:58:02:de:8e:ad"  # the next five bytes instead


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
