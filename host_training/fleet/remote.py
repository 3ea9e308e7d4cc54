"""One device's model store over ssh: validated names, a device-side lock, and the link
operations deploy and rollback are built from.

The store is `<root>/models/` as `make install-device` makes it: owned by the service user,
group `coral-classifier-deploy` (setgid, group-writable), so a deploy user in that group
writes versions and links without root. Every shell word that comes from a user or a
bundle is validated first and quoted; every ssh and rsync call puts `--` before its
positional arguments, so a host such as `-oProxyCommand=...` can never become an option.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from device.errors import CoralError

log = logging.getLogger("host_training.fleet.deploy")

# user@host, host, user@[v6]; never starting with '-', no shell or ssh metacharacters
_HOST = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,63}@)?"
                   r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])$")
# a version as it becomes a folder name: starts with a letter or digit, safe characters
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}-[0-9a-f]{12}$")
DEPLOY_GROUP = "coral-classifier-deploy"
LOCK = ".deploy.lock"
PENDING = ".deploy-pending"
NONCE_FILE = ".reload-nonce"


class DeployError(CoralError):
    exit_code = 6


class UsageError(CoralError):
    exit_code = 2


def check_host(host: str) -> str:
    """A host as ssh takes it, or UsageError: nothing that ssh could read as an option."""
    if not _HOST.match(host):
        raise UsageError(f"host {host!r} is not user@host or host (letters, digits, '.', '-', "
                         "'_'; not starting with '-'): give e.g. pi@vending-7")
    return host


def check_version(version: str) -> str:
    """A bundle version safe to become a folder name, checked before anything is written."""
    if not _VERSION.match(version or ""):
        raise DeployError(f"bundle version {version!r} cannot be deployed: it must be 1-64 "
                          "characters, letters, digits, '.', '_', '+' or '-', starting with a "
                          "letter or digit; set `version` in the bundle's manifest.json")
    return version


def version_dir(version: str, sha256: str) -> str:
    """The folder of a version on the device: <version>-<first 12 hex of the sha256>."""
    name = f"{check_version(version)}-{sha256[:12]}"
    assert _DIR.match(name), name
    return name


@dataclass
class Target:
    host: str  # user@host, as ssh takes it
    root: str = "/var/lib/coral-classifier"
    ssh_opts: str = ""
    reload_cmd: str = "sudo -n systemctl reload coral-classifier"
    start_cmd: str = "sudo -n systemctl restart coral-classifier"  # first model: not running
    device_id: str = ""
    broker: str = ""  # host:port of the MQTT broker the device reports to
    topic_prefix: str = "coral-classifier"
    mqtt: Any = None  # device.config.MqttConfig from --config: credentials, TLS, prefix

    def __post_init__(self) -> None:
        check_host(self.host)
        if not self.root.startswith("/"):
            raise UsageError(f"--root {self.root!r} must be an absolute path")

    @property
    def models(self) -> str:
        return f"{self.root.rstrip('/')}/models"

    @property
    def q(self) -> str:
        return shlex.quote(self.models)

    def _ssh_args(self) -> list[str]:
        return ["ssh", *shlex.split(self.ssh_opts), "--", self.host]

    def ssh(self, command: str, check: bool = True, input: str | None = None,
            timeout: float = 120) -> str:
        try:
            r = subprocess.run([*self._ssh_args(), command], capture_output=True, text=True,
                               input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.host}: `{command[:80]}` took longer than {timeout:.0f} s "
                              "(is the network up?)") from None
        if check and r.returncode != 0:
            raise DeployError(f"{self.host}: `{command[:200]}` failed ({r.returncode}): "
                              f"{r.stderr.strip()[-400:]}{self._hint(r.stderr)}")
        return r.stdout.strip()

    def _hint(self, stderr: str) -> str:
        if "Permission denied" in stderr and "publickey" not in stderr:
            user = self.host.split("@")[0] if "@" in self.host else "your user"
            return (f". Is {user} in the {DEPLOY_GROUP} group on the device? "
                    f"(`sudo make install-device DEPLOY_USERS={user}` there, then log in again)")
        return ""

    def rsync(self, src: str, dest: str) -> None:
        ssh = " ".join(shlex.quote(a) for a in ["ssh", *shlex.split(self.ssh_opts)])
        # no -o/-g: files take the store's group (setgid folder); group-writable so every
        # deploy user and the device's own updater can prune them later
        r = subprocess.run(["rsync", "-rltp", "--delete", "--chmod=Dug=rwx,Do=rx,Fug=rw,Fo=r",
                            "-e", ssh, "--", f"{src}/", f"{self.host}:{dest}/"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise DeployError(f"{self.host}: copying the bundle failed: {r.stderr.strip()}"
                              f"{self._hint(r.stderr)}")

    @contextmanager
    def lock(self, wait: float = 120) -> Iterator[None]:
        """Hold models/.deploy.lock (flock) on the device for the whole block: a second
        deploy, a rollback or the device's own pull updater waits for it. The lock lives
        in one ssh session: if this process or its connection dies, it is released."""
        cmd = (f"mkdir -p -- {self.q} && cd -- {self.q} && exec flock -w {int(wait)} {LOCK} "
               "sh -c 'echo LOCKED; exec cat >/dev/null'")
        proc = subprocess.Popen([*self._ssh_args(), cmd], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        timer = threading.Timer(wait + 30, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline().strip() if proc.stdout else ""
        finally:
            timer.cancel()
        if line != "LOCKED":
            proc.kill()
            err = proc.stderr.read().strip() if proc.stderr else ""
            proc.wait()
            why = (f"another deploy or update held {LOCK} for {wait:.0f} s"
                   if proc.returncode == 1 and not err else err[-400:])
            raise DeployError(f"{self.host}: cannot lock {self.models}/{LOCK}: {why}"
                              f"{self._hint(err)}")
        log.debug("%s: locked %s/%s", self.host, self.models, LOCK)
        try:
            yield
        finally:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- the store's links (call these only while holding the lock) ----------------------
    def links(self) -> dict[str, str]:
        """current/previous as stored (raw link text) and resolved (absolute), '' if absent."""
        out = self.ssh(f"cd -- {self.q} && for l in current previous; do "
                       "printf '%s\\t%s\\t%s\\n' \"$l\" \"$(readlink -- $l)\" "
                       "\"$(readlink -f -- $l)\"; done; printf 'pending\\t%s\\n' "
                       f"\"$(cat {PENDING} 2>/dev/null)\"")
        got: dict[str, str] = {}
        for line in out.splitlines():
            name, *rest = line.split("\t")
            got[name] = rest[0] if rest else ""
            if len(rest) > 1 and name in ("current", "previous"):
                got[f"{name}_path"] = rest[1] if rest[0] else ""
        return got

    def set_link(self, name: str, target: str) -> None:
        """Point models/<name> at target with one rename: never a moment without it.
        An empty target removes the link."""
        if not target:
            self.ssh(f"cd -- {self.q} && rm -f -- {name}")
            return
        t = shlex.quote(target)
        self.ssh(f"cd -- {self.q} && ln -sfn -- {t} .{name}.tmp && mv -T -- .{name}.tmp {name}")

    def write_file(self, name: str, text: str) -> None:
        self.ssh(f"cd -- {self.q} && cat > .{name}.tmp && chmod 0664 .{name}.tmp && "
                 f"mv -T -- .{name}.tmp {name}", input=text)

    def remove_file(self, name: str) -> None:
        self.ssh(f"cd -- {self.q} && rm -f -- {name}", check=False)

    def recover(self) -> None:
        """A deploy that died between its switch and its confirmation left a pending marker
        naming what served before: restore it before anything else touches the store."""
        state = self.links()
        before = state.get("pending", "")
        if before and state.get("current") != before:
            log.warning("%s: an earlier deploy did not finish; restoring current -> %s",
                        self.host, before)
            self.set_link("current", before)
        if before:
            self.remove_file(PENDING)

    def prune(self, keep: int) -> list[str]:
        """Remove the oldest versions beyond `keep`; never what current or previous resolve
        to (relative or absolute links alike), never a name that is not a version's."""
        out = self.ssh(f"cd -- {self.q} && printf 'PIN %s\\nPIN %s\\nPWD %s\\n' "
                       "\"$(readlink -f -- current)\" \"$(readlink -f -- previous)\" "
                       "\"$(pwd -P)\"; "
                       "find . -mindepth 1 -maxdepth 1 -type d -printf 'DIR %T@ %f\\n' "
                       "| sort -k2 -rn")
        pinned, real, versions = set(), "", []
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "PIN" and rest:
                pinned.add(rest)
            elif kind == "PWD":
                real = rest
            elif kind == "DIR":
                name = rest.partition(" ")[2]
                if _VERSION.match(name) and not name.endswith(".partial"):
                    versions.append(name)
        if not real:
            raise DeployError(f"{self.host}: cannot list {self.models}")
        kept = [v for v in versions if f"{real}/{v}" in pinned]
        removed = []
        for v in versions:
            if f"{real}/{v}" in pinned:
                continue
            if len(kept) < keep:
                kept.append(v)
                continue
            self.ssh(f"cd -- {self.q} && rm -rf -- {shlex.quote(v)}")
            removed.append(v)
            log.info("%s: removed old version %s", self.host, v)
        return removed
