"""The config: example valid, unknown keys and bad values named, check-config exit codes."""

import pytest

from device.config import load_config, parse_config
from device.errors import ConfigError

from .conftest import ROOT, run_cli


def test_example_config_is_valid_and_documents_every_key():
    cfg = load_config(ROOT / "device" / "example.toml")
    assert cfg.camera.type == "replay" and cfg.model.backend == "auto"
    text = (ROOT / "device" / "example.toml").read_text()
    for section in type(cfg).model_fields:  # every section, every key
        for key in type(getattr(cfg, section)).model_fields:
            # the keys that override the bundle's operating point are shown commented out
            assert f"\n{key} =" in text or f"\n# {key} =" in text, \
                f"{section}.{key} is not documented in example.toml"
    assert not cfg.decision.model_fields_set & {"threshold", "class_thresholds",
                                                "background_labels", "unknown_labels"}, \
        "example.toml must not override the bundle's operating point"


def test_defaults_without_file_sections():
    cfg = parse_config({})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.topic_prefix) == (
        "localhost", 1883, "coral-classifier")
    assert cfg.mqtt.resolved_device_id()


@pytest.mark.parametrize("data, needle", [
    ({"camera": {"fsp": 10}}, "camera.fsp: unknown key"),
    ({"model": {"backend": "gpu"}}, "model.backend"),
    ({"mqtt": {"port": 70000}}, "mqtt.port"),
    ({"mqtt": {"topic_prefix": "a/#"}}, "mqtt.topic_prefix"),
    ({"model": {"device": "usb:x"}}, "model.device"),
    ({"mqtt": {"cert_file": "c.pem"}}, "cert_file and mqtt.key_file"),
    ({"extra": {}}, "extra: unknown key"),
])
def test_bad_values_are_named(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert needle in str(e.value)


def test_password_from_env_and_file(tmp_path, monkeypatch):
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    cfg = parse_config({"mqtt": {"password_file": str(f), "password_env": "CC_PW"}})
    assert cfg.mqtt.password() == "s3cret"
    monkeypatch.setenv("CC_PW", "from-env")
    assert cfg.mqtt.password() == "from-env"
    bad = parse_config({"mqtt": {"password_file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="password_file"):
        bad.mqtt.password()


def test_check_config_cli(tmp_path):
    good = run_cli("check-config", str(ROOT / "device" / "example.toml"))
    assert good.returncode == 0 and "OK" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[camera]\ntype = "replay"\nfsp = 3\n')
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "camera.fsp" in r.stderr and "unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[camera\n")
    r = run_cli("check-config", str(broken))
    assert r.returncode == 2 and "not valid TOML" in r.stderr
