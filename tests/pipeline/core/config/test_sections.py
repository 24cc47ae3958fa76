"""Sections' own rules: the console's token, the Ray application's name and route, the model's precision."""

from __future__ import annotations

import pytest

from pipeline.core.config import validate_config
from pipeline.core.errors import ConfigError


def test_console_token_is_long_or_absent() -> None:
    assert validate_config({"console": {"token": "${CONSOLE_TOKEN:-}"}}, environ={}).console.token is None
    with pytest.raises(ConfigError, match=r"console\.token: must be at least 16 characters"):
        validate_config({"console": {"token": "short"}}, environ={})
    cfg = validate_config({"console": {"token": "${T}"}}, environ={"T": "x" * 24})
    assert cfg.console.token is not None and "x" * 24 not in repr(cfg)


def test_ray_application_name_and_route() -> None:
    ray = validate_config({}, environ={}).ray
    assert (ray.app_name, ray.route_on(attached=False), ray.route_on(attached=True)) == \
        ("vigil-run", "/", "/vigil-run")
    assert validate_config({"ray": {"route_prefix": "/cams"}}, environ={}).ray.route_on(attached=True) == "/cams"
    with pytest.raises(ConfigError) as err:
        validate_config({"ray": {"app_name": "my app", "adress": "x"}}, environ={})
    assert "ray.app_name" in str(err.value) and "ray.adress" in str(err.value) and "address" in str(err.value)


def test_inference_precision_and_the_int8_minimum() -> None:
    inference = validate_config({}, environ={}).inference
    assert (inference.precision, inference.min_int8_agreement) == ("fp32", 0.99)
    cfg = validate_config({"inference": {"precision": "int8", "min_int8_agreement": 0.95}}, environ={})
    assert (cfg.inference.precision, cfg.inference.min_int8_agreement) == ("int8", 0.95)
    with pytest.raises(ConfigError) as err:
        validate_config({"inference": {"precision": "int4", "min_int8_agreement": 1.5}}, environ={})
    assert "inference.precision: must be one of 'fp32' or 'int8'" in str(err.value)
    assert "inference.min_int8_agreement: must be <= 1" in str(err.value)
