"""The environment: ``${VAR}`` substitution, and the variables that settings fall back on."""

from __future__ import annotations

from pipeline.core.config import ray_address, substitute_env, validate_config


def test_substitution_forms() -> None:
    env = {"A": "1"}
    assert substitute_env("${A}-${B:-two}-$${A}", env) == ("1-two-${A}", [])
    assert substitute_env("${B}", env) == ("", ["B"])


def test_ray_address_flag_then_environment_then_config() -> None:
    cfg = validate_config({"ray": {"address": "10.0.0.5:6379"}}, environ={})
    assert ray_address(cfg, "head:6379", {"RAY_ADDRESS": "auto"}) == "head:6379"
    assert ray_address(cfg, None, {"RAY_ADDRESS": "auto"}) == "auto"
    assert ray_address(cfg, None, {"RAY_ADDRESS": ""}) == "10.0.0.5:6379"  # empty counts as unset
    assert ray_address(validate_config({}, environ={}), None, {}) is None  # a Ray of vigil's own
