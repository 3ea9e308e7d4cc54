"""The README and docs/ stay true: their links resolve, the make targets and subcommands
they name exist, and the vending-slot config of the quick start, applied to the installed
config as the README says (keys changed in their sections, `roi = []` deleted, the region
table added at the end), passes `check-config`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from .conftest import ROOT, run_cli

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_every_relative_link_resolves():
    broken = []
    for doc in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", doc.read_text()):
            if not target.startswith(("http://", "https://")) and \
                    not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_make_targets_and_subcommands_named_in_the_readme_exist():
    text = re.sub(r"<!--.*?-->", "", README.read_text(), flags=re.S)  # reserved places
    targets = set(re.findall(r"^([a-z][a-z0-9_-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"(?:^|`|&& |sudo )make ([a-z][a-z0-9-]+)", text, re.M)) - {"help"}
    assert named and named <= targets, named - targets
    for sub in set(re.findall(r"coral-classifier (run|check-config|classify|doctor|fleet)\b",
                              text)):
        assert run_cli(sub, "--help").returncode == 0, sub
    for sub in ("train", "evaluate", "retune", "inspect", "check-edgetpu", "compile",
                "negative-set"):
        assert sub in text
        assert run_cli(sub, "--help", module="host_training").returncode == 0, sub


def installed_config() -> str:
    """device/example.toml as systemd/install-device.sh writes it (the same sed edits)."""
    text = (ROOT / "device" / "example.toml").read_text()
    script = (ROOT / "systemd" / "install-device.sh").read_text()
    assert 's|^type = "replay"' in script and "models/current" in script  # still the edits
    text = re.sub(r'(?m)^type = "replay".*$', 'type = "picamera2"', text)
    text = re.sub(r'(?m)^source = ".demo/replay".*$', 'source = ""', text)
    return re.sub(r'(?m)^path = "compiled_models/demo-notes".*$',
                  f'path = "{ROOT / "compiled_models" / "banknotes-vnd"}"', text)


def follow_step_7(config: str, snippet: str, password_hash: str) -> str:
    """Change each key of the snippet in its section, delete `roi = []`, add the tables."""
    head, tables = re.split(r"(?m)^\[\[camera\.roi\]\]", snippet, maxsplit=1)
    section = ""
    for line in head.splitlines():
        line = line.split("#", 1)[0].strip() if not line.startswith("password_hash") else line
        if m := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = m.group(1)
        elif m := re.match(r"(\w+) = ", line):
            if m.group(1) == "password_hash":
                line = f'password_hash = "{password_hash}"'
            start = config.index(f"[{section}]\n")
            end = config.find("\n[", start + 1)
            body = config[start:end if end > 0 else None]
            assert re.search(rf"(?m)^{m.group(1)} = ", body), (section, m.group(1))
            new = line.strip()
            config = config[:start] + re.sub(rf"(?m)^{m.group(1)} = .*$",
                                             lambda _, new=new: new, body, count=1) + \
                (config[end:] if end > 0 else "")
    assert re.search(r"(?m)^roi = \[\]", config)  # the line the README says to delete
    config = re.sub(r"(?m)^roi = \[\].*$", "", config)
    return config + "\n[[camera.roi]]" + tables


def test_the_quick_starts_vending_slot_config_passes_check_config(tmp_path):
    text = README.read_text()
    step7 = text[text.index("### 7. Configure a vending slot"):text.index("### 8.")]
    (snippet,) = code_blocks(step7, "toml")
    hashed = subprocess.run([sys.executable, "-m", "device.web.auth"], input="pa55 word\n",
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert hashed.returncode == 0, hashed.stderr
    config = follow_step_7(installed_config(), snippet, hashed.stdout.strip().splitlines()[-1])
    parsed = tomllib.loads(config)
    assert parsed["decision"]["mode"] == "event" and parsed["web"]["enabled"] is True
    assert parsed["camera"]["roi"][0]["name"] == "slot"
    path = tmp_path / "config.toml"
    path.write_text(config)
    r = run_cli("check-config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "camera=picamera2" in r.stdout
    # and without deleting `roi = []`, as the README warns, it is refused with exit 2
    path.write_text(config.replace("[camera]\n", "[camera]\nroi = []\n", 1))
    assert run_cli("check-config", str(path)).returncode == 2
