"""End to end in a real terminal: tmux runs `ssh` to a local sshd, `tuneforge` starts there, the
wizard is filled with send-keys, a detached (tmux) run starts, and the run finishes.

Needs tmux, ssh and sshd (scripts/setup.sh --test installs them as root): fails without them;
skipped only when not root (sshd must run as root to log a user in).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import require_tools, shared

pytestmark = pytest.mark.timeout(420)

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def sshd(tmp_path):
    """sshd on 127.0.0.1:<free port> with a generated host key, accepting one generated client key."""
    require_tools("tmux", "ssh", "ssh-keygen", "sshd")
    if os.geteuid() != 0:
        pytest.skip("the local sshd is started as root (it logs in the same user)")
    d = tmp_path / "ssh"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPrintMotd no\nAcceptEnv LANG LC_*\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "wb"))

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return proc.poll() is not None and pytest.fail((d / "sshd.log").read_text())

    _poll(listening, 20, "sshd to listen")
    yield {"port": port, "key": d / "client"}
    proc.terminate()
    proc.wait(timeout=10)


class Term:
    """A tmux pane on a private server: send keys, read the screen."""

    def __init__(self, command: str):
        self.sock = f"tftest-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "-L", self.sock, "new-session", "-d", "-x", "80", "-y", "24", "-s", "t", command], check=True)
        # keep the pane after ssh exits, so a failure shows the last screen (e.g. a traceback)
        subprocess.run(["tmux", "-L", self.sock, "set-option", "-t", "t", "remain-on-exit", "on"], check=True)

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run(["tmux", "-L", self.sock, "send-keys", "-t", "t", *(["-l"] if literal else []), *keys], check=True)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "-L", self.sock, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True)
        return out.stdout

    def wait(self, text: str, timeout: float = 60) -> str:
        try:
            return _poll(lambda: self.screen() if text in self.screen() else None, timeout, repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}") from None

    def cursor_row(self) -> int:
        out = subprocess.run(["tmux", "-L", self.sock, "display", "-p", "-t", "t", "#{cursor_y}"], capture_output=True, text=True)
        return int(out.stdout.strip() or -1)

    def tab_to(self, label: str, timeout: float = 60) -> None:
        """Tab until the text cursor sits in the input labelled `label` (Textual puts the terminal
        cursor in the focused input), so typed keys cannot overtake the focus change."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.screen().splitlines()
            rows = [i for i, line in enumerate(lines) if line == f" {label}" or line.startswith(f" {label} ")]
            input_focused = lines and "? Help" not in lines[-1]  # the footer drops '?' while typing
            if rows and input_focused and self.cursor_row() == rows[0]:
                return
            before = self.cursor_row()
            self.keys("Tab")
            end = time.monotonic() + 2  # until the cursor moves (a Select or button keeps it still)
            while time.monotonic() < end and self.cursor_row() == before:
                time.sleep(0.1)
        raise AssertionError(f"could not focus {label!r}; the screen:\n{self.screen()}")

    def field(self, label: str) -> str | None:
        for line in self.screen().splitlines():
            if line == f" {label}" or line.startswith(f" {label} "):
                return line[len(label) + 1:].strip()
        return None

    def clear_field(self, label: str) -> None:
        """Empty the focused input and wait until it shows empty (key bindings such as ctrl+u are
        handled after printable keys already queued, so typing on at once could be wiped out)."""
        self.keys("End", "C-u")
        _poll(lambda: (self.field(label) or "").startswith("default:") or self.field(label) == "", 10, f"{label} cleared")

    def alive(self) -> bool:
        out = subprocess.run(["tmux", "-L", self.sock, "display", "-p", "-t", "t", "#{pane_dead}"], capture_output=True, text=True)
        return out.stdout.strip() == "0"

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)


def test_wizard_over_ssh_starts_a_detached_run_that_finishes(sshd, tiny_model_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k.startswith(("TUNEFORGE_", "HF_", "PYTHONPATH"))}  # this checkout
    env.update(HF_HUB_OFFLINE="1", TERM="xterm-256color", LANG="C.UTF-8")
    exports = " ".join(f"{k}={json.dumps(v)}" for k, v in env.items())
    remote = f"cd {work} && export {exports} PATH={venv_bin}:$PATH && exec tuneforge"
    ssh = (f"ssh -tt -i {sshd['key']} -p {sshd['port']} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           f"-o LogLevel=ERROR root@127.0.0.1 '{remote}'")
    term = Term(ssh)
    session = "tf-e2e"  # services names every tmux session tf-<run>
    try:
        term.wait("No runs yet", 60)
        term.keys("n")
        term.wait("Models on this machine", 30)
        term.tab_to("model")
        term.clear_field("model")
        term.type(str(tiny_model_dir))
        term.wait("3.2M (3,219,776)", 30)  # the tiny model's details, not the embedded one's
        term.keys("C-n")
        term.wait("simpo  simple preference", 30)  # the stage list (its hint may be scrolled away at 80x24)
        term.keys("C-n")
        term.wait("Method (", 30)
        term.keys("C-n")
        term.wait("a typed path is relative to the working directory", 90)  # the dataset step (its tree title may scroll away)
        term.tab_to("file")
        term.type(str(shared("alpaca_en_demo.json")))
        term.wait("rows read", 120)
        term.tab_to("max samples")
        term.type("16")
        term.wait("16 rows read", 60)
        term.keys("C-n")
        term.wait("Suggested for this method", 30)
        term.tab_to("max steps")
        term.type("2")
        term.keys("C-n")
        term.wait("run name", 30)
        term.clear_field("run name")  # focused when the step opens
        term.type("e2e")
        term.wait("e2e.yaml", 10)
        term.keys("C-t")
        term.wait("tmux", 30)
        status = work / "runs" / "e2e" / "status.json"

        def ended():
            try:
                st = json.loads(status.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return st if st.get("state") in ("finished", "failed", "stopped") else None

        st = _poll(ended, 300, "the detached run to end")
        assert st["state"] == "finished", (work / "runs" / "e2e" / "train.log").read_text()[-2000:]
        assert st["step"] == 2
        assert (work / "runs" / "e2e" / "adapter").is_dir()
        assert (work / "e2e.yaml").is_file()
        term.wait("finished", 20)  # the monitor shows it too
        assert term.alive(), "the app (or ssh) exited:\n" + term.screen()
        out = subprocess.run([sys.executable, "-m", "tuneforge.runner.cli", "validate", "e2e.yaml"], cwd=work,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    finally:
        term.close()
        subprocess.run(["tmux", "kill-session", "-t", f"={session}"], capture_output=True)


def test_the_app_draws_on_the_terminal_when_stderr_goes_to_a_file(tmp_path):
    """`tuneforge new 2>err.log` used to show a blank screen: Textual draws on stderr."""
    require_tools("tmux")
    venv_bin = Path(sys.executable).parent
    env = " ".join(f"{k}={json.dumps(v)}" for k, v in os.environ.items() if k.startswith(("TUNEFORGE_", "HF_", "PYTHONPATH")))
    term = Term(f"cd {tmp_path} && env {env} TERM=xterm-256color {venv_bin}/tuneforge new 2>{tmp_path}/err.log")
    try:
        term.wait("Models on this machine", 60)
        term.keys("C-q")
        _poll(lambda: not term.alive() or None, 30, "the app to quit")
    finally:
        term.close()
