"""BeeHook: host keys pinned or refused against the real private sshd, one SSH session per hook, the
fixed command line (no personal data), secrets kept out of errors and reprs, and the local runner."""

from __future__ import annotations

import json
import subprocess

import pytest

from cms_operators.backdrop.backend import BackdropBackend
from cms_operators.backdrop.hook import BOOTSTRAP, BeeHook, parse_output
from cms_operators.backend import CmsAuthError, CmsConfigError, CmsUnavailable, NewUser
from sandbox.backdrop import testing

backdrop = testing.backdrop  # fixture: an emulated site (bee as a local command)
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHOESC/CfjEQNQJdtXjwkHJkoeRo1i33wwTw/1EWn2UU"


@pytest.fixture
def real(real_backdrop):
    real_backdrop.reset()
    yield real_backdrop
    real_backdrop.reset()


def _hook(monkeypatch, connection: str) -> BeeHook:
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection)
    return BeeHook("cms_default")


@pytest.mark.slow
def test_the_pinned_host_key_is_accepted_and_one_session_serves_every_call(real, monkeypatch):
    hook = _hook(monkeypatch, real.connection())
    backend = BackdropBackend("cms_default", hook=hook)
    backend.preflight(["member"])
    (user,) = backend.create_users([NewUser(username="ada", email="ada@example.org", roles=("member",))])
    backend.find_users(["ada@example.org"], [])
    backend.send_password_mails([user])
    assert (hook.calls, hook.sessions) == (4, 1)
    backend.close()
    assert hook._ssh is None
    assert backend.find_by_email("ada@example.org").uf_id == user.uf_id  # a closed backend reopens lazily
    assert hook.sessions == 2
    backend.close()


@pytest.mark.slow
def test_an_unknown_host_key_is_refused_with_how_to_pin_it(real, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no known_hosts of the worker's user
    hook = _hook(monkeypatch, real.connection(host_key=None))
    with pytest.raises(CmsConfigError) as caught:
        hook.call("facts")
    assert caught.value.code == "unknown_host_key"
    assert "cms_default" in caught.value.message and f"ssh-keyscan -p {real.port} -t ed25519" in caught.value.message
    assert real.private_key.splitlines()[1] not in caught.value.message


@pytest.mark.slow
def test_a_host_key_that_is_not_the_pinned_one_is_refused(real, monkeypatch):
    hook = _hook(monkeypatch, real.connection(host_key=OTHER_KEY))
    with pytest.raises(CmsConfigError) as caught:
        hook.call("facts")
    assert caught.value.code == "host_key_mismatch" and "not the pinned one" in caught.value.message


@pytest.mark.slow
def test_switching_the_host_key_check_off_is_refused(real, monkeypatch):
    hook = _hook(monkeypatch, real.connection(no_host_key_check="true"))
    with pytest.raises(CmsConfigError) as caught:
        hook.call("facts")
    assert caught.value.code == "host_key_check_off"


@pytest.mark.slow
def test_the_host_key_from_known_hosts_is_accepted(real, monkeypatch, tmp_path):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(f"[{real.host}]:{real.port} {real.host_key}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    hook = _hook(monkeypatch, real.connection(host_key=None))
    assert hook.call("facts")["facts"]["version"] == "1.28.x-dev"
    hook.close()


@pytest.mark.slow
def test_a_wrong_key_is_an_auth_error_without_the_key(real, monkeypatch, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    key = (tmp_path / "k").read_text()
    hook = _hook(monkeypatch, real.connection(private_key=key))
    with pytest.raises(CmsAuthError) as caught:
        hook.call("facts")
    assert caught.value.code == "ssh_auth" and key.splitlines()[1] not in str(caught.value)
    assert key.splitlines()[1] not in repr(hook) + repr(hook._ssh)


@pytest.mark.slow
def test_personal_data_travels_on_stdin_never_on_the_command_line(real, monkeypatch):
    hook = _hook(monkeypatch, real.connection())
    sent = []
    original = type(hook)._run_ssh

    def spy(self, data):
        sent.append((self.command(), data))
        return original(self, data)

    monkeypatch.setattr(type(hook), "_run_ssh", spy)
    hook.call("find_users", {"emails": ["secret.person@example.org"], "names": []})
    hook.close()
    ((command, data),) = sent
    assert command[-1] == BOOTSTRAP and "secret.person" not in json.dumps(command)
    assert b"secret.person@example.org" in data


def test_an_unreachable_server_is_unavailable(monkeypatch):
    hook = _hook(monkeypatch, json.dumps({"conn_type": "backdrop", "host": "127.0.0.1", "port": 1, "login": "x",
                                          "extra": {"site_root": "/srv", "host_key": OTHER_KEY}}))
    with pytest.raises(CmsUnavailable) as caught:
        hook.call("facts")
    assert caught.value.code == "ssh_connect" and "cms_default" in caught.value.message


def test_the_key_and_its_passphrase_are_masked_as_soon_as_they_are_read(monkeypatch):
    import airflow.sdk.log

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\nQyNTUxOQAAACBrandomkeymaterial\n" \
          "-----END OPENSSH PRIVATE KEY-----\n"
    masked = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", masked.append)
    hook = _hook(monkeypatch, json.dumps({"conn_type": "backdrop", "host": "127.0.0.1", "login": "x",
                                          "password": "pass-phrase-1", "extra": {"site_root": "/srv",
                                                                                 "private_key": key}}))
    assert hook.site_root == "/srv"
    assert {key, "pass-phrase-1", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU", "QyNTUxOQAAACBrandomkeymaterial"} <= {m for m in masked if isinstance(m, str)}


def test_a_connection_without_site_root_names_the_setting(monkeypatch):
    hook = _hook(monkeypatch, json.dumps({"conn_type": "backdrop", "host": "", "extra": {}}))
    with pytest.raises(CmsConfigError) as caught:
        hook.call("facts")
    assert "site_root" in caught.value.message and "cms_default" in caught.value.message


def test_local_bee_that_does_not_bootstrap_the_site_is_a_config_error(backdrop, monkeypatch, tmp_path):
    hook = _hook(monkeypatch, backdrop.connection(site_root=str(tmp_path)))
    with pytest.raises(CmsConfigError) as caught:
        hook.call("facts")
    assert caught.value.code == "no_answer" and "site_root" in caught.value.message


def test_a_missing_bee_names_bee_path(backdrop, monkeypatch, tmp_path):
    hook = _hook(monkeypatch, backdrop.connection(bee_path=str(tmp_path / "no-bee")))
    with pytest.raises(CmsConfigError) as caught:
        hook.call("facts")
    assert caught.value.code == "no_bee" and "bee_path" in caught.value.message


def test_parse_output_ignores_bees_own_text():
    out = ("\x1b[33m[info]\x1b[0m noise\n@@cmsuser:item@@ {\"index\": 0}\nnot json @@cmsuser:item@@ {bad\n"
           "\n@@cmsuser:answer@@ {\"results\": []}\n\x1b[31m trailing\x1b[0m")
    assert parse_output(out) == ({"results": []}, [{"index": 0}])
