"""Short runs of the two coverage-guided fuzz campaigns (the 1,000,000-input ones are `make fuzz`),
and proof that each target fails when the code under test misbehaves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_common import BugFound
from netconf_target import NetconfTarget
from registration_target import RegistrationTarget

from ha.engine.home_agent import HomeAgent, InternalError
from ha.protocol import pull_registration_reply

CAMPAIGN = Path(__file__).with_name("campaign.py")


@pytest.fixture
def registration():
    target = RegistrationTarget()
    yield target
    target.close()


@pytest.fixture
def netconf():
    target = NetconfTarget()
    yield target
    target.close()


@pytest.mark.parametrize(("target", "runs"), [("registration", 20_000), ("netconf", 3_000)])
def test_short_campaign(tmp_path, target, runs):
    """libFuzzer exits 1 and prints the traceback on the first bug; 0 after `runs` clean inputs."""
    corpus = tmp_path / "corpus"
    done = subprocess.run(
        [
            sys.executable,
            str(CAMPAIGN),
            target,
            f"-runs={runs}",
            f"-artifact_prefix={tmp_path}/",
            "-seed=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Done {runs} runs" in done.stderr
    coverage = int(re.findall(r"DONE\s+cov: (\d+)", done.stderr)[-1])
    assert coverage > 300, done.stderr[-2000:]  # the seeds reach deep into the code (not one parse error)
    assert not list(tmp_path.glob("crash-*"))


def test_registration_seeds_are_accepted(registration):
    """The seeds get past authentication: the campaign starts from accepted registrations."""
    target = registration
    codes = []
    check = target.check_reply

    def spy(request, out):
        reply = check(request, out)
        codes.append(None if out is None else pull_registration_reply(out.data).code)
        return reply

    target.check_reply = spy
    for seed in target.seeds():
        target.one(seed)
    assert codes.count(0) >= 10 and {133, 136} <= set(codes), codes


@pytest.mark.parametrize("raising", ["0", "1"])
def test_registration_target_fails_on_an_engine_bug(monkeypatch, registration, raising):
    """A bug while carrying out an accepted request fails the campaign both ways the engine reports
    it: counted in internal-errors and logged (production), or raised (MIPHA_RAISE_INTERNAL_ERRORS)."""
    monkeypatch.setenv("MIPHA_RAISE_INTERNAL_ERRORS", raising)
    target = registration
    seed = target.seeds()[0]
    target.one(seed)

    def broken(self, *args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(HomeAgent, "_apply_accept", broken)
    with pytest.raises(InternalError if raising == "1" else BugFound):
        target.one(seed)


def test_registration_target_fails_on_an_unauthenticated_accept(monkeypatch, registration):
    """Code 0 for a request whose authenticator does not verify is a bug the target reports."""
    target = registration
    seed = bytearray(target.seeds()[0])
    seed[-1] ^= 1  # the authenticator's last byte: the engine answers 131
    target.one(bytes(seed))
    monkeypatch.setattr("registration_target.verified", lambda data: False)
    with pytest.raises(BugFound, match="does not verify"):
        target.one(target.seeds()[0])


def test_netconf_target_fails_on_a_handler_bug(monkeypatch, netconf):
    """An RPC handler that raises is answered "internal error" by the server: the target reports it."""
    target = netconf
    seeds = target.seeds()
    target.one(seeds[0])
    core = target.harness.core
    key = ("urn:ietf:params:xml:ns:netconf:base:1.0", "get")

    def broken(session, op):
        raise RuntimeError("injected")

    monkeypatch.setitem(core.rpc_handlers, key, broken)
    with pytest.raises(BugFound, match="error logged"):
        target.one(seeds[0])
