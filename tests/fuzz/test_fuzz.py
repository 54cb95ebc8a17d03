"""Short runs of the two coverage-guided fuzz campaigns (the 1,000,000-input ones are `make fuzz`),
and proof that each target fails when the code under test misbehaves."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import registration_target
from engine_helpers import HA, Clock
from fastpath_target import FastpathTarget
from fuzz_common import BugFound
from netconf_target import NetconfTarget
from registration_target import AAA_SPI, SAS, RegistrationTarget

from ha.engine.home_agent import AaaCounters, HomeAgent, InternalError
from ha.mn.session import UNSPECIFIED, MobileNodeSession
from ha.protocol import pull_registration_reply

CAMPAIGN = Path(__file__).with_name("campaign.py")
REVOCATION_COUNTERS = (
    "revocations_received",
    "revocation_acks_sent",
    "revocations_sent",
    "revocation_acks_received",
)


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


@pytest.mark.parametrize(
    ("target", "runs"), [("registration", 20_000), ("netconf", 3_000), ("fastpath", 3_000)]
)
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


def test_an_input_file_replays(tmp_path):
    """`campaign.py <target> <file>` runs that one input (how a crash is replayed), seeds untouched."""
    saved = tmp_path / "crash-input"
    saved.write_bytes(RegistrationTarget().seeds()[1])
    done = subprocess.run(
        [sys.executable, str(CAMPAIGN), "registration", str(saved)],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Running: {saved}" in done.stderr and f"Executed {saved}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash-input"]


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


def test_registration_seeds_reach_aaa_and_revocation(monkeypatch, registration):
    """The seeds drive the newer surfaces: RADIUS look-ups with every answer (also MN-AAA CHAP, type 36,
    after an NAI, 131), revocation negotiated (137) and revocation messages both ways (types 7, 15)."""
    engines = []
    make = registration_target.harness

    def spy(*args, **kwargs):
        h = make(*args, **kwargs)
        engines.append(h.engine)
        return h

    monkeypatch.setattr(registration_target, "harness", spy)
    for seed in registration.seeds():
        registration.one(seed)
    totals: Counter[str] = Counter()
    for engine in engines:
        totals.update({name: getattr(engine.aaa_counters, name) for name in AaaCounters.__slots__})
        totals.update({name: getattr(engine.statistics, name) for name in REVOCATION_COUNTERS})
    assert totals["accepted"] >= 4 and totals["absorbed"] >= 2, totals
    assert totals["rejected"] >= 1 and totals["unavailable"] >= 1, totals
    assert totals["revocations_received"] == totals["revocation_acks_sent"] == 1, totals
    assert totals["revocations_sent"] == totals["revocation_acks_received"] == 1, totals


def test_registration_target_fails_on_an_unverified_mn_aaa_accept(monkeypatch, registration):
    """Code 0 for an MN-AAA request whose CHAP response is wrong (given a RADIUS that accepts anything)
    is a bug the target reports; with the real check the request is refused (131)."""
    session = MobileNodeSession(
        HA, UNSPECIFIED, IPv4Address("203.0.113.5"), SAS[AAA_SPI], nai="c@aaa", mn_aaa_secret=b"wrong"
    )
    request = session.build(Clock().timestamp())
    record = bytes([0, 0, len(request)]) + request
    registration.one(record)
    monkeypatch.setattr(registration_target, "chap_verifies", lambda lookup: True)
    with pytest.raises(BugFound, match="does not verify"):
        registration.one(record)


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


def test_fastpath_seeds_are_answered_in_c_and_a_divergence_is_a_bug(monkeypatch):
    """The C path campaign starts from batches C answers (hits between misses, both nodes, both
    algorithms); a C path that answered differently from Python is a bug the target reports."""
    from ha import fastpath

    target = FastpathTarget()
    try:
        for seed in target.seeds():
            target.one(seed)
        assert target.batch.hits >= 6
        real = fastpath.run

        def lying(batch, engine, *args, **kwargs):  # every hit applied, its reply dropped
            real(batch, engine, *args, **kwargs)
            batch.take()

        monkeypatch.setattr(fastpath, "run", lying)
        with pytest.raises(BugFound, match="replies differ"):
            target.one(target.seeds()[0])
    finally:
        target.close()
