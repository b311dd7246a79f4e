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
    (["--advertise", "nope"], "invalid --advertise"),
    (["--vxlan-port", "0"], "invalid --vxlan-port"),
    (["--join", "1.2.3.4:99999"], "invalid --join"),
    (["--fastpath-spin-us", "-1"], "invalid --fastpath-spin-us"),
])
def test_bad_values(argv, match):
    with pytest.raises(BadRequest, match=match):
        parse(argv)


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
