"""When tracing is on: `tracing: auto|on|off` and the standard OTEL_* environment (the spans: tests/server)."""

from __future__ import annotations

import pytest

from modelyard.config import Settings
from modelyard.tracing import wanted


@pytest.mark.parametrize("setting, environ, on", [
    ("auto", {}, False),
    ("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ("auto", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ("auto", {"OTEL_TRACES_EXPORTER": "console"}, True),
    ("auto", {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ("auto", {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ("auto", {"OTEL_SERVICE_NAME": "x"}, False),  # naming a service exports nothing
    ("on", {}, True),
    ("off", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
])
def test_tracing_is_on_when_the_setting_or_the_environment_says(tmp_path, setting, environ, on):
    assert wanted(Settings(data_dir=tmp_path, tracing=setting), environ) is on
