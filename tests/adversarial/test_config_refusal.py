"""Hole 2: every overlayd.toml key and flag is typed and range-checked at start.

A real overlayd is started, in a namespace of its own where it could otherwise run, with one bad
value at a time. It must exit non-zero at once with ONE line on stderr naming the key, what it must
be and what it got, and no traceback (before the fix, `plaintext = "no"` ran gossip unencrypted).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from overlaynet.lab import enter_netns

pytestmark = pytest.mark.adversarial

# The values the issue names plus one of each kind of check; every Config key's refusal is
# covered (faster, without a process) by tests/unit/test_config_state.py::test_each_key_refuses_bad_values.
CASES = [
    ('plaintext = "no"', 'plaintext must be true or false, got "no"'),
    ('log_level = "verbose"', 'log_level must be one of "debug", "info", "warning", "error", got "verbose"'),
    ('resync_interval = "soon"', 'resync_interval must be a number of seconds above 0 (at most 2592000), got "soon"'),
    ("withdraw_delay = -1", "withdraw_delay must be a number of seconds from 0 to 2592000, got -1"),
    ("join = 5", 'join must be a list of "ADDR[:PORT]" strings, e.g. ["198.18.0.1:7946"], got 5'),
    ("gossip_port = 70000", "gossip_port must be a port number from 1 to 65535, got 70000"),
    ("colour = 1", "unknown key 'colour'"),
]


def run_overlayd(netns: str, tmp_path, toml: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """overlayd with a config that is valid except for `toml`, in its own namespace (where, if it
    accepted the value, it would start and keep running: the timeout turns that into a failure)."""
    config = tmp_path / "overlayd.toml"
    config.write_text(f'advertise = "127.0.0.1"\nbind = "127.0.0.1"\nstate_dir = "{tmp_path}/state"\n'
                      f'socket = "{tmp_path}/overlayd.sock"\n{toml}\n')
    argv = [sys.executable, "-m", "overlaynet.daemon", "--config", str(config), *flags]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, preexec_fn=enter_netns(netns))
    except subprocess.TimeoutExpired:
        pytest.fail(f"overlayd accepted {toml!r} {flags} and kept running")


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("overlayd: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("toml,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_value_is_refused_with_one_line(netns, tmp_path, toml, expected):
    assert_one_line_refusal(run_overlayd(netns("cfg"), tmp_path, toml), expected)


@pytest.mark.parametrize("flags,expected", [
    (["--resync-interval", "soon"], '--resync-interval must be a number of seconds above 0 (at most 2592000), '
                                    'got "soon"'),
    (["--withdraw-delay", "-3"], '--withdraw-delay must be a number of seconds from 0 to 2592000, got "-3"'),
])
def test_bad_flag_value_is_refused_with_one_line(netns, tmp_path, flags, expected):
    assert_one_line_refusal(run_overlayd(netns("cfg"), tmp_path, "", *flags), expected)
