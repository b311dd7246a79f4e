"""Hostile CNI invocations: the installed overlaynet-cni binary, driven as libcni drives it (env +
stdin, answer on stdout), must answer every bad input with a CNI error object — the spec's code for
what was wrong — and never a traceback or a silently ignored argument."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.plugins import cni
from overlaynet.plugins.cni import spec
from overlaynet.plugins.cni.install import install

pytestmark = [pytest.mark.adversarial, pytest.mark.timeout(300)]

CONF = {"cniVersion": "1.0.0", "name": "adv", "type": "overlaynet-cni", "socket": "/nonexistent/overlayd.sock"}


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    return install(str(tmp_path_factory.mktemp("cni-bin")))


def invoke(binary: str, env: dict[str, str], stdin: str) -> tuple[int, Any, str]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_PATH": os.path.dirname(binary), **env}
    result = subprocess.run([binary], input=stdin, env=full, capture_output=True, text=True, timeout=60)
    out = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, out, result.stderr


def env_for(command: str, args: str) -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/proc/self/ns/net",
            "CNI_IFNAME": "eth0", "CNI_ARGS": args}


@pytest.mark.parametrize("args", [";;==;IP", "IP", "=198.19.1.9", "IP==198.19.1.9", "IgnoreUnknown=1;;IP=x",
                                  "IP=198.19.1.9;"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_cni_args_that_do_not_parse_are_error_4(binary: str, command: str, args: str) -> None:
    code, out, stderr = invoke(binary, env_for(command, args), json.dumps(CONF))
    assert code != 0 and "Traceback" not in stderr, stderr
    assert out["code"] == spec.ERR_INVALID_ENV and "CNI_ARGS" in out["msg"] and out["cniVersion"] == "1.0.0", out


def test_well_formed_cni_args_still_pass(binary: str) -> None:
    """Not a plugin that refuses every CNI_ARGS: a good one gets past parsing (to the daemon, absent here)."""
    code, out, _ = invoke(binary, env_for("ADD", "IgnoreUnknown=1;K8S_POD_NAME=q1;IP=198.19.1.9"), json.dumps(CONF))
    assert code != 0 and out["code"] == spec.ERR_TRY_AGAIN_LATER, out


def well_formed(out: dict[str, Any] | None, code: int) -> None:
    """A CNI error object the runtime can show, or a success."""
    if code == 0:
        return
    assert isinstance(out, dict) and isinstance(out.get("code"), int) and isinstance(out.get("msg"), str), out
    assert isinstance(out.get("cniVersion"), str)
    assert "internal error" not in out["msg"], out


TEXT = st.text(alphabet=st.sampled_from("ab=;IP.198/ \x00é"), max_size=30)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=15,
)
CONF_KEYS = ["cniVersion", "name", "type", "network", "socket", "subnet", "args", "runtimeConfig", "prevResult",
             "dns", "ipam", "cni.dev/valid-attachments", "capabilities"]
# Nested shapes the plugin reads, filled with anything: type confusion one level down.
NESTED = {
    "runtimeConfig": st.fixed_dictionaries({}, optional={"ips": JSON, "mac": JSON, "aliases": JSON}) | JSON,
    "args": st.fixed_dictionaries({}, optional={"cni": st.fixed_dictionaries({}, optional={"ips": JSON})}) | JSON,
    "prevResult": st.fixed_dictionaries({}, optional={"ips": st.lists(JSON, max_size=2)}) | JSON,
    "cni.dev/valid-attachments": st.lists(JSON, max_size=2) | JSON,
}
CONFS = st.fixed_dictionaries({"cniVersion": st.sampled_from(["1.0.0", "0.4.0", "1.1.0", "x"]),
                               "name": st.sampled_from(["adv", "", "../x"]),
                               "socket": st.just("/nonexistent/overlayd.sock")},
                              optional={k: NESTED.get(k, JSON) for k in CONF_KEYS
                                        if k not in ("cniVersion", "name", "socket")})


@pytest.mark.parametrize("extra", [
    {"args": {"cni": {"ips": 5}}}, {"runtimeConfig": {"ips": 5}}, {"runtimeConfig": 5},
    {"runtimeConfig": {"aliases": {"adv": 5}}}, {"runtimeConfig": {"mac": [1]}}, {"network": 5},
    {"prevResult": {"ips": [5]}}, {"cni.dev/valid-attachments": "all"},
])
def test_config_keys_of_the_wrong_type_are_error_7(binary: str, extra: dict[str, Any]) -> None:
    code, out, stderr = invoke(binary, env_for("ADD", ""), json.dumps({**CONF, **extra}))
    assert code != 0 and "Traceback" not in stderr, stderr
    assert out["code"] == spec.ERR_INVALID_CONFIG and "internal error" not in out["msg"], out


@settings(max_examples=400, deadline=None)
@given(command=st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "VERSION", "GC", "", "add"]),
       args=TEXT, conf=CONFS | JSON, ifname=st.sampled_from(["eth0", "", "../../x", "a" * 20]))
def test_fuzzed_config_and_environment_get_a_cni_answer(command: str, args: str, conf: Any, ifname: str) -> None:
    env = {**env_for(command, args), "CNI_IFNAME": ifname}
    code, out = cni.run(env, json.dumps(conf))
    well_formed(out, code)


@settings(max_examples=200, deadline=None)
@given(stdin=st.text(max_size=200), command=st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC"]))
def test_fuzzed_stdin_gets_a_cni_answer(stdin: str, command: str) -> None:
    code, out = cni.run(env_for(command, ""), stdin)
    well_formed(out, code)
