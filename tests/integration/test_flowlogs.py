"""Flow ids end to end on a real 2-node cluster: curl -v prints one, `podnet logs --flow`
shows that request's path through both agents' logs, in time order."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from harness import CROSS_NODE_PODS, RunningCluster, start_cluster, stop_cluster, wait_for

PODS = CROSS_NODE_PODS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    c = start_cluster(tmp_path_factory.mktemp("flowlogs"), 2)
    try:
        manifest = c.state_dir / "pods.yaml"
        manifest.write_text(PODS)
        assert c.kubectl("apply", "-f", str(manifest)).returncode == 0
        for name in ("client", "echo-2"):
            c.running_pod(name)
        # Routes spread by gossip: wait until node-1 reaches node-2's pod at all.
        url = f"http://{_ip(c, 'echo-2')}:8080/"
        wait_for(lambda: c.podnet("exec", "client", "--", "curl", "-s", "-m", "2",
                                  url).returncode == 0, 20, what="node-1 routing to node-2")
        yield c
    finally:
        stop_cluster(c)


def _ip(c: RunningCluster, pod: str) -> str:
    found = c.pod(pod)
    assert found is not None
    return str(found["status"]["podIP"])


def test_curl_flow_is_traced_across_nodes(cluster: RunningCluster) -> None:
    result = cluster.podnet("exec", "client", "--", "curl", "-sv", "-m", "5",
                            f"http://{_ip(cluster, 'echo-2')}:8080/")
    assert result.returncode == 0, result.stderr
    found = re.search(r"^\* flow: (\S+)$", result.stderr, re.M)
    assert found is not None, result.stderr
    flow = found.group(1)

    def events() -> list[dict[str, object]] | None:
        out = cluster.podnet("logs", "--flow", flow, "-o", "json")
        assert out.returncode == 0, out.stderr
        got = [json.loads(line) for line in out.stdout.splitlines()]
        # flow.closed is logged when the client's end is gone, just after curl returns
        return got if any(e["event"] == "flow.closed" for e in got) else None

    got = wait_for(events, 10, what=f"flow {flow} closed in the logs")
    where = [(e["node"], e["event"]) for e in got]
    for step in [("node-1", "flow.route"), ("node-1", "tunnel.stream_out"),
                 ("node-2", "tunnel.stream_in"), ("node-2", "flow.delivered"),
                 ("node-1", "flow.closed")]:
        assert step in where, (step, where)
    assert where.index(("node-1", "flow.route")) < where.index(("node-2", "tunnel.stream_in")) \
        < where.index(("node-1", "flow.closed"))
    assert [e["ts"] for e in got] == sorted(str(e["ts"]) for e in got)
    route = got[where.index(("node-1", "flow.route"))]
    assert route["node"] == "node-1" and route["pod"] == "client" and route["verdict"] == "tunnel"
    closed = got[where.index(("node-1", "flow.closed"))]
    assert int(str(closed["bytes_received"])) > 0 and int(str(closed["bytes_sent"])) > 0

    trace = cluster.podnet("logs", "--flow", flow)
    assert trace.returncode == 0
    lines = trace.stdout.splitlines()
    assert lines[0].startswith(f"flow {flow}  from default/client")
    assert any("agent-node-2" in line and "tunnel.stream_in" in line for line in lines)


def test_refused_connection_shows_in_verdict_filter(cluster: RunningCluster) -> None:
    result = cluster.podnet("exec", "client", "--", "curl", "-sv", "-m", "5",
                            f"http://{_ip(cluster, 'echo-2')}:9999/")
    assert result.returncode == 7, result.stderr
    out = cluster.podnet("logs", "--verdict", "refused", "--pod", "default/client", "-o", "json")
    assert out.returncode == 0, out.stderr
    refused = [json.loads(line) for line in out.stdout.splitlines()]
    assert any(e["event"] == "flow.refused" and str(e["dst"]).endswith(":9999")
               for e in refused), refused
    text = cluster.podnet("logs", "--verdict", "refused", "--since", "5m")
    assert "flow.refused" in text.stdout and "[ECONNREFUSED]" in text.stdout
