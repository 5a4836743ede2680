"""Command line, port specs, durations and target resolution helpers (pure functions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastpf.client import resolve as R
from fastpf.client.args import (
    PortPair,
    parse_addresses,
    parse_args,
    parse_ports,
    parse_request_timeout,
)
from fastpf.errors import ClientError, UsageError
from fastpf.goparity import parse_duration
from tests.support.fake_api import pod_json


def test_flags_interleaved_and_forms() -> None:
    o = parse_args(
        [
            "-n",
            "ns1",
            "pod/x",
            "--address=0.0.0.0",
            "5000",
            "-v=6",
            "6000:80",
            "--insecure-skip-tls-verify",
            "-q",
            "--protocol",
            "spdy",
            "-sfoo:1",
        ]
    )
    assert o.namespace == "ns1" and o.addresses == "0.0.0.0" and o.verbosity == 6
    assert o.target == "pod/x" and o.ports == ["5000", "6000:80"]
    assert o.insecure_skip_tls_verify is True and o.quiet and o.protocol == "spdy"
    assert o.server == "foo:1"
    o = parse_args(["-nfoo", "x", "1", "--", "-2"])
    assert o.namespace == "foo" and o.ports == ["1", "-2"]
    assert (
        parse_args(["--insecure-skip-tls-verify=false", "x", "1"]).insecure_skip_tls_verify is False
    )


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["x"], "TYPE/NAME and list of ports are required for port-forward"),
        ([], "TYPE/NAME and list of ports are required for port-forward"),
        (["-n"], "flag needs an argument: 'n' in -n"),
        (["x", "80", "--namespace"], "flag needs an argument: --namespace"),
        (["x", "80", "--bogus"], "unknown flag: --bogus"),
        (["x", "-1"], "unknown shorthand flag: '1' in -1"),
        (
            ["--insecure-skip-tls-verify=foo", "x", "80"],
            'invalid argument "foo" for "--insecure-skip-tls-verify" flag: strconv.ParseBool: parsing "foo": invalid syntax',
        ),
        (
            ["--pod-running-timeout=abc", "x", "80"],
            'invalid argument "abc" for "--pod-running-timeout" flag: time: invalid duration "abc"',
        ),
        (
            ["-v", "abc", "x", "80"],
            'invalid argument "abc" for "-v, --v" flag: strconv.ParseInt: parsing "abc": invalid syntax',
        ),
        (
            ["--pod-running-timeout=-5s", "x", "80"],
            "--pod-running-timeout must be higher than zero",
        ),
        (
            ["--request-timeout=abc", "x", "80"],
            "Invalid timeout value. Timeout must be a single integer in seconds, or an integer followed by a corresponding time unit (e.g. 1s | 2m | 3h)",
        ),
    ],
)
def test_usage_errors_match_kubectl(argv: list[str], msg: str) -> None:
    with pytest.raises(UsageError) as ei:
        parse_args(argv)
    assert ei.value.line == "error: " + msg


def test_durations() -> None:
    assert parse_duration("1m0s") == 60
    assert parse_duration("1.5h") == 5400
    assert parse_duration("300ms") == pytest.approx(0.3)
    assert parse_duration("0") == 0
    assert parse_duration("-5s") == -5
    for bad in ("abc", "5", "", "5x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_request_timeout("5") == 5 and parse_request_timeout("2m") == 120


def test_port_specs() -> None:
    assert parse_ports(["5000", "6000:80", ":81", "0:82"]) == [
        PortPair(5000, 5000),
        PortPair(6000, 80),
        PortPair(0, 81),
        PortPair(0, 82),
    ]
    cases = {
        "70000": "error parsing local port '70000': strconv.ParseUint: parsing \"70000\": value out of range",
        "a:80": "error parsing local port 'a': strconv.ParseUint: parsing \"a\": invalid syntax",
        "80:abc": "error parsing remote port 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax",
        "0": "remote port must be > 0",
        "5000:0": "remote port must be > 0",
        "1:2:3": "invalid port format '1:2:3'",
    }
    for spec, msg in cases.items():
        with pytest.raises(ClientError) as ei:
            parse_ports([spec])
        assert ei.value.message == msg


def test_addresses() -> None:
    assert parse_addresses("localhost") == ["localhost"]
    assert parse_addresses("127.0.0.1,::1,127.0.0.1") == ["127.0.0.1", "::1"]
    for text, msg in (
        ("foo", "foo is not a valid IP"),
        ("127.0.0.1,foo", "foo is not a valid IP"),
        ("", "you must specify at least 1 address"),
    ):
        with pytest.raises(ClientError) as ei:
            parse_addresses(text)
        assert ei.value.message == msg


def test_targets_and_selectors() -> None:
    assert R.split_target("x")[1:] == ("pods", "Pod", "x")
    assert R.split_target("svc/s")[1:] == ("services", "Service", "s")
    assert R.split_target("deployments.apps/d")[0] == "/apis/apps/v1"
    assert R.split_target("sts/s")[2] == "StatefulSet"
    with pytest.raises(ClientError, match='the server doesn\'t have a resource type "foo"'):
        R.split_target("foo/x")
    assert R.selector_from_set({"b": "2", "a": "1"}) == "a=1,b=2"
    sel = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "x", "operator": "DoesNotExist"},
            {"key": "env", "operator": "Exists"},
        ],
    }
    assert R.selector_from_label_selector(sel) == "app=web,env,tier in (a,b),!x"
    with pytest.raises(ClientError, match="Service is defined without a selector"):
        R.selector_for({"metadata": {"name": "s"}, "spec": {}}, "Service")


def test_most_active_pod_order() -> None:
    def pod(
        name: str,
        phase: str,
        ready: bool,
        restarts: int = 0,
        created: str = "2024-01-01T00:00:00Z",
        node: str = "n",
    ) -> dict[str, Any]:
        p = pod_json(name, phase)
        p["spec"]["nodeName"] = node
        p["metadata"]["creationTimestamp"] = created
        p["status"]["conditions"] = [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": created}
        ]
        p["status"]["containerStatuses"] = [{"restartCount": restarts}]
        return p

    pending = pod("pending", "Pending", False)
    unready = pod("unready", "Running", False)
    ready = pod("ready", "Running", True)
    restarts = pod("restarts", "Running", True, restarts=3)
    older = pod("older", "Running", True, created="2023-01-01T00:00:00Z")
    unassigned = pod("unassigned", "Running", True, node="")
    assert R.most_active([pending, unready, ready])["metadata"]["name"] == "ready"
    assert R.most_active([restarts, ready])["metadata"]["name"] == "ready"
    assert R.most_active([ready, older])["metadata"]["name"] == "older"
    assert R.most_active([unassigned, unready])["metadata"]["name"] == "unready"


def test_port_translation() -> None:
    pod = pod_json(
        "p",
        ports=[
            {"name": "web", "containerPort": 8080},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "both", "containerPort": 54, "protocol": "UDP"},
            {"name": "bothtcp", "containerPort": 54, "protocol": "TCP"},
        ],
    )
    assert R.translate_pod_ports(["web", "9000:web", "80", "1:2:3"], pod) == [
        "8080",
        "9000:8080",
        "80",
        "1",
    ]
    with pytest.raises(ClientError, match="Pod 'p' does not have a named port 'nosuch'"):
        R.translate_pod_ports(["nosuch"], pod)
    with pytest.raises(ClientError, match="UDP protocol is not supported for dns"):
        R._check_udp(["dns"], pod, "Pod")
    R._check_udp(["54", "web"], pod, "Pod")  # TCP on the same number: allowed
    svc = {
        "metadata": {"name": "s"},
        "spec": {
            "selector": {"app": "x"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "plain", "port": 81, "targetPort": 9091},
                {"name": "same", "port": 82},
                {"name": "udp", "port": 53, "protocol": "UDP", "targetPort": 53},
            ],
        },
    }
    assert R.translate_service_ports(["http", "80", "8000:http", "81", "82"], svc, pod) == [
        "80:8080",
        "80:8080",
        "8000:8080",
        "81:9091",
        "82",
    ]
    with pytest.raises(ClientError, match="Service s does not have a service port 99"):
        R.translate_service_ports(["99"], svc, pod)
    with pytest.raises(ClientError, match="Service 's' does not have a named port 'zzz'"):
        R.translate_service_ports(["zzz"], svc, pod)
    with pytest.raises(ClientError, match="UDP protocol is not supported for udp"):
        R._check_udp(["udp"], svc, "Service")
    headless = {
        "metadata": {"name": "h"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80, "targetPort": 8080}]},
    }
    assert R.translate_service_ports(["80"], headless, pod) == ["80"]


# ---- kubectl's global flags (kubectl options) and fastpf's own -----------------------------------

# A valid value for every flag kubectl 1.33 (and 1.37) lists for port-forward; bools take none.
VALID_VALUES = {
    "as": "bob",
    "as-group": "g",
    "as-uid": "42",
    "as-user-extra": "k=v",
    "cache-dir": "/tmp/c",
    "certificate-authority": "ca.crt",
    "client-certificate": "c.crt",
    "client-key": "c.key",
    "cluster": "c",
    "context": "c",
    "kubeconfig": "kc",
    "kuberc": "rc",
    "log-flush-frequency": "5s",
    "namespace": "ns",
    "password": "p",
    "profile": "cpu",
    "profile-output": "out.pprof",
    "proxy-url": "http://127.0.0.1:3128",
    "request-timeout": "0",
    "server": "https://x:1",
    "tls-server-name": "x",
    "token": "t",
    "user": "u",
    "username": "u",
    "v": "2",
    "vmodule": "a=1,b*=2",
    "address": "localhost",
    "pod-running-timeout": "1m0s",
}
BOOLS = (
    "disable-compression",
    "insecure-skip-tls-verify",
    "match-server-version",
    "warnings-as-errors",
    "help",
)
KUBECTL_133_GLOBALS = (
    "as",
    "as-group",
    "as-uid",
    "cache-dir",
    "certificate-authority",
    "client-certificate",
    "client-key",
    "cluster",
    "context",
    "disable-compression",
    "insecure-skip-tls-verify",
    "kubeconfig",
    "log-flush-frequency",
    "match-server-version",
    "namespace",
    "password",
    "profile",
    "profile-output",
    "request-timeout",
    "server",
    "tls-server-name",
    "token",
    "user",
    "username",
    "v",
    "vmodule",
    "warnings-as-errors",
)


@pytest.mark.parametrize(
    "flag",
    sorted(
        set(KUBECTL_133_GLOBALS)
        | {"as-user-extra", "kuberc", "proxy-url", "address", "pod-running-timeout"}
    ),
)
def test_every_kubectl_flag_is_accepted(flag: str) -> None:
    argv = [f"--{flag}"] if flag in BOOLS else [f"--{flag}={VALID_VALUES[flag]}"]
    opts = parse_args([*argv, "pod/x", "80"])
    assert opts.target == "pod/x" and opts.ports == ["80"]


def test_kubectl_flag_list_is_complete(kubectl_bin: Callable[[str], str]) -> None:
    """The real kubectl 1.33's `options` and `port-forward --help`: every flag it names parses."""
    import re
    import subprocess

    binary = kubectl_bin("1.33")
    text = subprocess.run([binary, "options"], capture_output=True, text=True, timeout=30).stdout
    text += subprocess.run(
        [binary, "port-forward", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    names = set(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z-]*)=", text, re.M))
    assert {"as", "namespace", "address", "vmodule"} <= names  # the listing was read
    missing = [n for n in sorted(names) if n not in VALID_VALUES and n not in BOOLS]
    assert missing == []
    for name in sorted(names):
        argv = [f"--{name}"] if name in BOOLS else [f"--{name}={VALID_VALUES[name]}"]
        parse_args([*argv, "x", "80"])


def test_impersonation_flags_collect() -> None:
    o = parse_args(
        [
            "--as",
            "bob",
            "--as-group=a",
            "--as-group",
            "b,c",
            "--as-uid=7",
            "--as-user-extra=scopes=view",
            "--as-user-extra",
            "scopes=edit",
            "x",
            "1",
        ]
    )
    assert o.impersonate == "bob" and o.impersonate_uid == "7"
    assert o.impersonate_groups == ["a", "b,c"]  # stringArray: no comma splitting
    assert o.impersonate_extra == ["scopes=view", "scopes=edit"]


@pytest.mark.parametrize(
    "argv,msg",
    [
        (
            ["--log-flush-frequency=5", "x", "80"],
            'invalid argument "5" for "--log-flush-frequency" flag: parse error',
        ),
        (
            ["--vmodule=abc", "x", "80"],
            'invalid argument "abc" for "--vmodule" flag: syntax error: expect comma-separated list of filename=N',
        ),
        (
            ["--match-server-version=foo", "x", "80"],
            'invalid argument "foo" for "--match-server-version" flag: strconv.ParseBool: parsing "foo": invalid syntax',
        ),
        (["--profile=bogus", "x", "80"], "unknown profile 'bogus'"),
        (["--profile=bogus"], "unknown profile 'bogus'"),  # before the arguments, as kubectl
        (["--as-group"], "flag needs an argument: --as-group"),
        (
            ["-o", "xml", "x", "80"],
            'invalid argument "xml" for "-o, --output" flag: must be one of text, json',
        ),
        (
            ["-f", "f.yaml", "x", "80"],
            "-f/--config takes no TYPE/NAME or ports: they come from the file",
        ),
    ],
)
def test_flag_errors(argv: list[str], msg: str) -> None:
    with pytest.raises(UsageError) as ei:
        parse_args(argv)
    assert ei.value.line == "error: " + msg


def test_fastpf_own_flags() -> None:
    o = parse_args(
        ["-o", "json", "--stats", "--stats-interval=250ms", "--ready-file", "/tmp/r", "x", "1"]
    )
    assert (o.output, o.stats, o.stats_interval, o.ready_file) == ("json", True, 0.25, "/tmp/r")
    assert parse_args(["--events=json", "x", "1"]).output == "json"
    assert parse_args(["-f", "fw.yaml"]).config_file == "fw.yaml"
    assert parse_args(["--version"]).version
