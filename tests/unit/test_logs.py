"""One log format (overlaynet/logs.py): logfmt values quoted so that fields cannot be forged, JSON the same fields."""

from __future__ import annotations

import io
import json
import logging

import pytest

from overlaynet import logs

pytestmark = pytest.mark.unit


def emit(fmt: str, msg: str, *args: object, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.Formatter(fmt))
    logger = logging.getLogger("overlaynet.test-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    if exc:
        try:
            raise ValueError("boom here")
        except ValueError:
            logger.exception(msg, *args)
    else:
        logger.info(msg, *args)
    return stream.getvalue().rstrip("\n")


def test_values_with_spaces_quotes_and_equals_are_quoted():
    line = emit("logfmt", "event=bind-failed error=%s port=%d who=%s", OSError(99, "Cannot assign requested address"),
                4789, 'evil" injected=yes')
    assert 'error="[Errno 99] Cannot assign requested address"' in line
    assert "port=4789" in line
    fields = logs.parse_fields(line)
    assert fields["error"] == "[Errno 99] Cannot assign requested address"
    assert fields["who"] == 'evil" injected=yes' and "injected" not in fields  # no forged field
    assert fields["level"] == "info" and fields["event"] == "bind-failed"


def test_plain_messages_become_one_msg_field_and_tracebacks_one_field():
    line = emit("logfmt", "Error handling request from %s", "peer 1")
    assert logs.parse_fields(line)["msg"] == "Error handling request from peer 1"
    line = emit("logfmt", "event=crashed x=%s", "y", exc=True)
    assert "\n" not in line
    assert "ValueError: boom here" in logs.parse_fields(line)["traceback"]


def test_json_is_one_object_per_line_with_the_same_fields():
    line = emit("json", "event=attached ip=%s names=%s", "198.19.1.2", "a b")
    record = json.loads(line)
    assert record["event"] == "attached" and record["ip"] == "198.19.1.2" and record["names"] == "a b"
    assert record["logger"] == "overlaynet.test-logs" and "ts" in record


def test_secret_never_prints():
    secret = logs.Secret("c2VjcmV0IGtleSBtYXRlcmlhbA==")
    line = emit("logfmt", "event=x key=%s also=%r", secret, secret)
    assert "c2VjcmV0" not in line and line.count("<redacted>") == 2
    assert secret.reveal() == "c2VjcmV0IGtleSBtYXRlcmlhbA=="
