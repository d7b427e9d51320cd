"""Run from the repository root after building build/: /usr/bin/python3 bench/offset_latency.py [N]

OffsetCommit / OffsetFetch latency: through the proxy on a mapped topic (100 virtual over
10 physical: store read + physical commit + store write) vs the same request direct to the
2.0.2 mock on a topic of 100 physical partitions. Medians of N sequential requests."""
import os, statistics, sys, tempfile, time
from pathlib import Path
REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("KPP_PROXY_BIN", str(REPO / "build" / "proxy" / "kafka-partition-proxy"))
os.environ.setdefault("KPP_MOCK_CLUSTER_BIN", str(REPO / "build" / "tools" / "kpp-mock-cluster"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import kpp_testbed as tb, conftest, offsets_support as osup, vp_support as vs

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
log_dir = Path(tempfile.mkdtemp(prefix="kpp-lat-"))
mock = tb.MockCluster("mock202", log_dir)
proxy = tb.Proxy(mock, log_dir, "lat", conftest.VIRTUAL_MAPPING_202)
try:
    mock.create_topic("vp-lat", 10)
    mock.create_topic("plain-lat", 100)
    direct_ep = tb.Endpoint(mock, None)
    proxy_ep = tb.Endpoint(mock, proxy)
    def run(endpoint, topic, group):
        offsets = {v: (1000 + v, "") for v in range(100)}
        commit, fetch = [], []
        with osup.coordinator_connection(endpoint, group) as connection:
            for i in range(N):
                t = time.perf_counter()
                errors = osup.offset_commit(connection, group, -1, "", topic, {v: (o + i, m) for v, (o, m) in offsets.items()})
                commit.append(time.perf_counter() - t)
                assert all(e == 0 for e in errors.values()), errors
                t = time.perf_counter()
                osup.offset_fetch(connection, 5, group, {topic: list(range(100))})
                fetch.append(time.perf_counter() - t)
        return statistics.median(commit) * 1e6, statistics.median(fetch) * 1e6
    d = run(direct_ep, "plain-lat", tb.unique_name("lat-direct"))
    p = run(proxy_ep, "vp-lat", tb.unique_name("lat-proxy"))
    print(f"OffsetCommit of 100 partitions, median of {N}: direct (100 physical) {d[0]:.0f} us, "
          f"proxy (100 virtual over 10) {p[0]:.0f} us, ratio {p[0]/d[0]:.2f}")
    print(f"OffsetFetch v5 of 100 partitions, median of {N}: direct {d[1]:.0f} us, proxy {p[1]:.0f} us, "
          f"ratio {p[1]/d[1]:.2f}")
    _, metrics = proxy.http_get("/metrics")
    print("\n".join(l for l in metrics.splitlines() if l.startswith("kpp_offset_store")))
finally:
    proxy.stop(); mock.stop()
