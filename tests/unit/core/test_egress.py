"""The egress policy: which addresses opendoctor calls on a user's behalf."""

from __future__ import annotations

import pytest

from opendoctor.core.egress import EgressDenied, EgressPolicy, parse_allowed

REFUSED_BY_DEFAULT = [
    ("169.254.169.254", 80, "cloud metadata"),  # the metadata service
    ("127.0.0.1", 8700, "loopback"),
    ("127.8.9.10", 80, "loopback"),
    ("::1", 80, "loopback"),
    ("::ffff:127.0.0.1", 80, "loopback"),  # IPv4-mapped: the same address
    ("10.1.2.3", 80, "private"),
    ("172.16.0.1", 80, "private"),
    ("192.168.1.1", 80, "private"),
    ("fd00::1", 80, "unique local"),
    ("fe80::1", 80, "link-local"),
    ("100.64.0.1", 80, "carrier-grade NAT"),
    ("0.0.0.0", 80, "unspecified"),
    ("224.0.0.1", 80, "multicast"),
    ("192.0.2.1", 80, "reserved"),  # documentation range
]


@pytest.mark.parametrize(("address", "port", "kind"), REFUSED_BY_DEFAULT)
def test_what_only_opendoctor_could_reach_is_refused(address: str, port: int, kind: str) -> None:
    problem = EgressPolicy().problem(address, port)
    assert problem is not None and kind in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"])
def test_globally_routable_addresses_are_called(address: str) -> None:
    assert EgressPolicy().problem(address, 443) is None


def test_an_allowed_entry_opens_exactly_what_it_names() -> None:
    policy = EgressPolicy.of(["127.0.0.1:5001", "[::1]:5002", "10.20.0.0/16"])
    assert policy.problem("127.0.0.1", 5001) is None
    assert policy.problem("127.0.0.1", 8700) is not None  # the lab's API: another port
    assert policy.problem("127.0.0.2", 5001) is not None
    assert policy.problem("::1", 5002) is None
    assert policy.problem("10.20.255.1", 1) is None
    assert policy.problem("10.21.0.1", 1) is not None


def test_a_name_leads_only_to_the_addresses_allowed_among_its_answers() -> None:
    policy = EgressPolicy.of(["127.0.0.1:5001"])
    both = ["::1", "127.0.0.1"]  # what `localhost` resolves to, say
    assert policy.allowed("localhost", both, 5001) == ["127.0.0.1"]
    with pytest.raises(EgressDenied, match=r"^localhost: ::1 is a loopback address"):
        policy.allowed("localhost", both, 8700)
    with pytest.raises(EgressDenied, match="no address"):
        policy.allowed("nowhere", [], 5001)


def test_urls_with_literal_addresses_are_judged_before_any_call() -> None:
    policy = EgressPolicy.of(["127.0.0.1:5001"])
    assert policy.url_problem("http://169.254.169.254/latest/meta-data/") is not None
    assert policy.url_problem("http://127.0.0.1:8700/hosts/compute2/fail") is not None
    assert policy.url_problem("http://localhost:8700/") is not None
    assert policy.url_problem("http://app.localhost:8700/") is not None
    assert policy.url_problem("http://[::1]/") is not None
    assert policy.url_problem("amqp://u:p@10.0.0.1/?exchange=x&routing_key=k") is not None
    assert policy.url_problem("http://127.0.0.1:5001/failure") is None
    assert policy.url_problem("http://localhost:5001/failure") is None
    # Names are judged on what they resolve to, when called.
    assert policy.url_problem("http://vnfm.example/failure") is None


@pytest.mark.parametrize(
    "entry", ["x", "1.2.3.4:0", "1.2.3.4:99999", "[::1", "[::1]x", "10.0.0.0/33"]
)
def test_an_allow_entry_that_makes_no_sense_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_allowed(entry)
