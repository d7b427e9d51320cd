"""Fixtures of the end-to-end tests: upstream mock clusters and the proxy in front of them.

Fixtures are session-scoped; meson runs each test file as its own pytest process, so every
file gets fresh mocks and a fresh proxy. Topic and group names are unique per test.
On a failure the proxy's and the mocks' log tails are attached to the report.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kpp_testbed  # noqa: E402

_logs_to_show: list[tuple[str, Path]] = []
_proxies: list = []
_failed = [False]


@pytest.fixture(scope="session")
def log_dir():
    path = Path(tempfile.mkdtemp(prefix="kpp-e2e-"))
    yield path
    if _failed[0] or os.environ.get("KPP_E2E_KEEP_LOGS"):
        print(f"\nkpp e2e: logs kept in {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _mock(kind: str, log_dir: Path):
    cluster = kpp_testbed.MockCluster(kind, log_dir)
    _logs_to_show.append((f"{kind} stderr", cluster.log_path))
    return cluster


@pytest.fixture(scope="session")
def mock202(log_dir):
    cluster = _mock("mock202", log_dir)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mock212(log_dir):
    cluster = _mock("mock212", log_dir)
    yield cluster
    cluster.stop()


def _endpoint(upstream, log_dir: Path, name: str, session=None, extra_config: str = ""):
    if kpp_testbed.direct_mode():
        yield kpp_testbed.Endpoint(upstream, None)
        return
    proxy = kpp_testbed.Proxy(upstream, log_dir, name, extra_config)
    _logs_to_show.append((f"{name} log", proxy.log_path))
    _proxies.append((name, proxy))
    try:
        yield kpp_testbed.Endpoint(upstream, proxy)
    finally:
        exit_code = proxy.stop()
        assert exit_code == 0, (
            f"proxy did not exit 0 within {kpp_testbed.PROXY_SHUTDOWN_TIMEOUT_S} s of SIGTERM "
            f"(rc={exit_code}); log:\n{proxy.log_tail()}")
        # The robustness tests send malformed requests on purpose; responses must still match.
        malformed_requests_sent = session is not None and any(
            item.module.__name__.endswith("test_robustness") for item in session.items)
        mismatches = [line for line in proxy.log_path.read_text(errors="replace").splitlines()
                      if "does not match the schema" in line
                      and not (malformed_requests_sent and "protocol check: request" in line)
                      and not _known_mock_deviation(line)]
        assert not mismatches, "real clients and brokers sent messages the schema files do not describe:\n" + \
            "\n".join(mismatches[:20])


def _known_mock_deviation(line: str) -> bool:
    """The 2.0.2 mock answers OffsetFetch's "all topics" form with a null topics array
    (length -1), which Kafka's schema does not allow; the proxy reads it as no topics."""
    return ("response from the broker" in line and "offset_fetch_response v" in line
            and "negative length" in line and "body ffffffff" in line.replace("body 00000000ffffffff", "body ffffffff"))


@pytest.fixture(scope="session")
def proxy202(mock202, log_dir, request):
    """The proxy in front of the librdkafka 2.0.2 mock (or the mock itself in direct mode)."""
    yield from _endpoint(mock202, log_dir, "proxy202", request.session)


@pytest.fixture(scope="session")
def proxy212(mock212, log_dir, request):
    """The proxy in front of the librdkafka 2.12 mock (or the mock itself in direct mode)."""
    yield from _endpoint(mock212, log_dir, "proxy212", request.session)


# The mapping every virtual-partition test runs under (DESIGN.md section 2): topics named
# vp-* are 100 virtual over 10 physical on the 2.0.2 mock and 40 over 4 on the 2.12 mock
# (whose topics always have 4 partitions); the other rules serve the per-topic tests.
VIRTUAL_MAPPING_202 = """mapping:
  tag_header: "kpr.vp"
  topics:
    "vp-.*": { virtual_partitions: 100, physical_partitions: 10 }
    "exact-orders": { virtual_partitions: 30, physical_partitions: 3 }
    "rx-.*": { virtual_partitions: 24, physical_partitions: 6 }
    "same-.*": { virtual_partitions: 5, physical_partitions: 5 }
"""
VIRTUAL_MAPPING_212 = """mapping:
  tag_header: "kpr.vp"
  topics:
    "vp-.*": { virtual_partitions: 40, physical_partitions: 4 }
    "wrong-.*": { virtual_partitions: 30, physical_partitions: 3 }
"""


@pytest.fixture(scope="session")
def vproxy202(mock202, log_dir, request):
    """The proxy with VIRTUAL_MAPPING_202 in front of the 2.0.2 mock."""
    yield from _endpoint(mock202, log_dir, "vproxy202", request.session, VIRTUAL_MAPPING_202)


@pytest.fixture(scope="session")
def vproxy212(mock212, log_dir, request):
    """The proxy with VIRTUAL_MAPPING_212 in front of the 2.12 mock."""
    yield from _endpoint(mock212, log_dir, "vproxy212", request.session, VIRTUAL_MAPPING_212)


@pytest.fixture(params=["mock202", "mock212"])
def endpoint(request):
    """Parametrizes a test over both upstreams."""
    return request.getfixturevalue("proxy202" if request.param == "mock202" else "proxy212")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        _failed[0] = True
        for name, proxy in _proxies:
            if proxy.exit_code is None and not proxy.alive():
                report.sections.append((f"{name} status", (
                    f"the proxy exited during the test with rc={proxy.process.returncode} "
                    f"(negative: killed by that signal)")))
        for title, path in _logs_to_show:
            report.sections.append((f"{title} (tail) {path}", kpp_testbed.tail_of(path, 60)))
