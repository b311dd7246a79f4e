import argparse
import os

import pytest

from overlaynet.agent import config
from overlaynet.agent.state import StateStore
from overlaynet.errors import BadRequest

pytestmark = pytest.mark.unit


def parse(argv):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.load(parser.parse_args(argv))


def test_defaults_when_no_config_file(tmp_path):
    cfg = parse([])  # the default path does not exist here: not an error
    assert cfg.vxlan_port == 4789 and cfg.gossip_port == 7946
    assert cfg.socket == "/run/overlaynet/overlayd.sock" and cfg.state_dir == "/var/lib/overlaynet"


def test_flags_override_file(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text('name = "from-file"\nvxlan_port = 5000\njoin = ["198.18.0.2"]\n')
    cfg = parse(["--config", str(path), "--vxlan-port", "6000"])
    assert cfg.name == "from-file" and cfg.vxlan_port == 6000 and cfg.join == ["198.18.0.2"]


def test_explicit_missing_config_is_an_error(tmp_path):
    with pytest.raises(BadRequest, match="does not exist"):
        parse(["--config", str(tmp_path / "missing.toml")])


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text("colour = 1\n")
    with pytest.raises(BadRequest, match="unknown key 'colour'"):
        parse(["--config", str(path)])


@pytest.mark.parametrize("argv,match", [
    (["--advertise", "nope"], "--advertise must be an IPv4 address"),
    (["--vxlan-port", "0"], "--vxlan-port must be a port number from 1 to 65535, got \"0\""),
    (["--join", "1.2.3.4:99999"], "--join must be a list of"),
    (["--fastpath-spin-us", "-1"], "--fastpath-spin-us must be a whole number of microseconds"),
])
def test_bad_values(argv, match):
    with pytest.raises(BadRequest, match=match):
        parse(argv)


@pytest.mark.parametrize("toml,expected", [
    ("resync_interval = 0", "resync_interval must be a number of seconds above 0 (at most 2592000), got 0"),
    ("settle_time = -0.5", "settle_time must be a number of seconds from 0 to 2592000, got -0.5"),
    ("ipam_reclaim_after = 1e12", "ipam_reclaim_after must be a number of seconds from 0 to 2592000, got 1000000000000.0"),
    ("startup_hold = nan", "startup_hold must be a number of seconds from 0 to 2592000, got NaN"),
    ('join = ["198.18.0.1:99999"]', 'join must be a list of "ADDR[:PORT]" strings, e.g. ["198.18.0.1:7946"], '
                                    'got ["198.18.0.1:99999"]'),
    ('join = [1]', 'join must be a list of "ADDR[:PORT]" strings, e.g. ["198.18.0.1:7946"], got [1]'),
    ('vxlan_port = "4789"', 'vxlan_port must be a port number from 1 to 65535, got "4789"'),
    ("vxlan_port = true", "vxlan_port must be a port number from 1 to 65535, got true"),
    ("fastpath_spin_us = 1.5", "fastpath_spin_us must be a whole number of microseconds from 0 to 1000000, got 1.5"),
    ('bind = "everywhere"', 'bind must be an IPv4 address such as 198.18.0.1, got "everywhere"'),
    ('advertise = "::1"', 'advertise must be an IPv4 address such as 198.18.0.1 (or unset), got "::1"'),
    ('dataplane = "ebpf"', 'dataplane must be one of "kernel", "userspace", got "ebpf"'),
    ('name = ""', 'name must be a name of 1 to 63 characters, got ""'),
    ("key_file = true", "key_file must be a path (or unset), got true"),
    ("state_dir = []", "state_dir must be a path, got []"),
    ("socket = 1", "socket must be a path, got 1"),
    ("plaintext = 1", "plaintext must be true or false, got 1"),
])
def test_each_key_refuses_bad_values(tmp_path, toml, expected):
    path = tmp_path / "o.toml"
    path.write_text(toml + "\n")
    with pytest.raises(BadRequest) as refused:
        parse(["--config", str(path)])
    assert refused.value.message == expected


def test_flags_are_converted_to_their_types(tmp_path):
    cfg = parse(["--resync-interval", "2.5", "--gossip-port", "8000", "--plaintext", "--log-level", "debug"])
    assert cfg.resync_interval == 2.5 and cfg.gossip_port == 8000 and cfg.plaintext is True
    assert cfg.log_level == "debug"


def test_file_values_must_have_their_type(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text('plaintext = "no"\n')
    with pytest.raises(BadRequest, match='^plaintext must be true or false, got "no"$'):
        parse(["--config", str(path)])
    path.write_text('plaintext = false\nresync_interval = 5\njoin = "198.18.0.2:7000"\n')
    cfg = parse(["--config", str(path)])
    assert cfg.plaintext is False and cfg.resync_interval == 5.0 and cfg.join == ["198.18.0.2:7000"]


def test_state_store_atomic_roundtrip(tmp_path):
    store = StateStore(str(tmp_path / "s"))
    store.prepare()
    store.write({"a": 1}, "networks", "blue.json")
    assert store.read("networks", "blue.json") == {"a": 1}
    assert list(store.items("networks")) == [("blue", {"a": 1})]
    assert not [n for n in os.listdir(tmp_path / "s" / "networks") if n.endswith(".tmp")]
    store.delete("networks", "blue.json")
    store.delete("networks", "blue.json")  # idempotent
    assert store.read("networks", "blue.json") is None


def test_state_store_survives_crash_leftovers(tmp_path):
    root = tmp_path / "s"
    (root / "networks").mkdir(parents=True)
    (root / "networks" / "blue.json.tmp").write_text('{"half')  # a crash between write and rename
    (root / "networks" / "red.json").write_text("{not json")  # should never happen; must not stop start
    store = StateStore(str(root))
    store.prepare()
    assert not (root / "networks" / "blue.json.tmp").exists()
    assert list(store.items("networks")) == []
    assert (root / "networks" / "red.json.corrupt").exists()


def test_state_keys_cannot_escape(tmp_path):
    store = StateStore(str(tmp_path))
    with pytest.raises(ValueError):
        store.write({}, "..", "x.json")
