"""Issue 10's proofs: network faults measured from inside the pods of a real cluster.

Four pods run `py:podapps.faults_probe:serve` in two sets that span both nodes (set=a: a1 on
node-1, a2 on node-2; set=b: b1 on node-1, b2 on node-2). Faults are set with the real CLI
(`podnet fault add|del`) and each figure is measured by the probe inside a pod (its own
per-request timings, echo counts, the sink's clock), so neither exec nor the API is in it.

Expectations come from what was configured, never from running podnet: the delay ratio is
(median RTT with the fault - median RTT without, same run) / delayMs, the loss count is held
to a binomial bound, the rate to the configured kbit/s. Bounds are generous but meaningful:
each is well outside what the wrong behaviour (no fault, the fault in both directions, a
fault that stays after a reset) would produce. Every wait for a change to take effect polls
(a fault reaches the agents through a watch); no assertion is on how long anything took.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness import PODNET, TESTS, RunningCluster, start_cluster, stop_cluster, wait_for

pytestmark = pytest.mark.kubectl

PODS = {"a1": ("node-1", "a"), "a2": ("node-2", "a"), "b1": ("node-1", "b"),
        "b2": ("node-2", "b")}
DELAY_MS = 40.0
RR_N = 50
LOSS_PCT = 10.0
DATAGRAMS = 2000
SEED = 7
SPORT = 41000           # the same source port both runs: the same flow, the same traffic
RATE_KBIT = 4000.0
BULK_BYTES = 1_000_000  # 2 s at 4000 kbit/s: the 20 ms burst the bucket allows is ~1% of it


def manifest() -> str:
    docs = []
    for name, (node, group) in PODS.items():
        docs.append(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{set: {group}}}}}
spec:
  nodeName: {node}
  containers: [{{name: probe, image: "py:podapps.faults_probe:serve"}}]
""")
    return "---\n".join(docs)


@dataclass
class Lab:
    cluster: RunningCluster
    ip: dict[str, str]

    def ask(self, pod: str, path: str) -> str:
        """A request to the probe's control server inside `pod`, through kubectl exec."""
        result = self.cluster.kubectl("exec", pod, "--", "curl", "-s", "-m", "100",
                                      f"http://127.0.0.1:8080{path}", timeout_s=120)
        assert result.returncode == 0, f"{pod} {path}: {result.stdout}{result.stderr}"
        return str(result.stdout)

    def fault(self, *args: str) -> str:
        """`podnet fault ...` as a user types it (the cluster found through PODNET_STATE_DIR)."""
        env = dict(os.environ, PODNET_STATE_DIR=str(self.cluster.state_dir),
                   PYTHONPATH=str(TESTS))
        result = subprocess.run([*PODNET, "fault", *args], capture_output=True, text=True,
                                timeout=60, env=env)
        assert result.returncode == 0, f"podnet fault {' '.join(args)}: " \
                                       f"{result.stdout}{result.stderr}"
        return result.stdout

    def rtts(self, src: str, dst: str, n: int = RR_N) -> list[float]:
        out = self.ask(src, f"/rr?host={self.ip[dst]}&n={n}")
        values = [float(line) for line in out.split()]
        assert len(values) == n, out
        return values

    def udp_lost(self, src: str, dst: str, n: int = DATAGRAMS, sport: int = 0) -> list[int]:
        out = self.ask(src, f"/udp?host={self.ip[dst]}&n={n}&sport={sport}").splitlines()
        assert out[0].startswith(f"sent {n} received"), out
        numbers = out[1].removeprefix("lost").strip()
        return [int(x) for x in numbers.split(",")] if numbers else []

    def connects(self, src: str, *dsts: str, timeout_s: float = 1.0) -> dict[str, str]:
        hosts = ",".join(self.ip[d] for d in dsts)
        out = self.ask(src, f"/connect?host={hosts}&timeout={timeout_s}")
        by_ip = dict(line.split() for line in out.splitlines())
        return {d: by_ip[self.ip[d]] for d in dsts}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cluster = start_cluster(tmp_path_factory.mktemp("faults-proof"), 2)
    try:
        result = cluster.kubectl("apply", "-f", "-", input=manifest())
        assert result.returncode == 0, result.stderr
        ips = {name: cluster.running_pod(name, timeout_s=60)["status"]["podIP"]
               for name in PODS}
        lab = Lab(cluster, ips)
        # Dial the node-to-node tunnels now: datagrams sent while a tunnel is being dialed
        # are held in a short queue (64, like the kernel's ARP queue) and the rest dropped,
        # which would be counted as the fault's loss.
        def all_reached() -> bool:
            return all(set(lab.connects(src, *PODS).values()) == {"ok"} for src in ("a1", "b2"))
        wait_for(all_reached, 20, what="a1 and b2 reaching every pod")
        yield lab
    finally:
        stop_cluster(cluster)


def median_delta_ms(lab: Lab, baseline_ms: float) -> float:
    return statistics.median(lab.rtts("a1", "a2")) - baseline_ms


def test_delay_is_what_was_set_and_zero_or_delete_restores_the_baseline(lab: Lab) -> None:
    # The same path without the fault, in the same run: the figure the delay adds to.
    baseline = statistics.median(lab.rtts("a1", "a2"))
    # direction `to`: only a1 -> a2 is delayed, so each round trip crosses the delay once.
    lab.fault("add", "slow", "--from", "pod/default/a1", "--to", "pod/default/a2",
              "--direction", "to", "--delay-ms", f"{DELAY_MS:g}")
    wait_for(lambda: statistics.median(lab.rtts("a1", "a2", 3)) > baseline + DELAY_MS / 2,
             20, interval_s=0.2, what="the delay in force")
    ratio = median_delta_ms(lab, baseline) / DELAY_MS
    # Within 10% of what was set (the bound). A missing delay gives ~0, a delay
    # applied both ways ~2, so the bound separates right from each wrong answer by a mile.
    assert 0.9 <= ratio <= 1.1, f"measured/configured delay {ratio:.3f}"

    # Only that pair: a1 to another pod on node-2 is untouched (a fault leaking to the node,
    # or to every flow of a1, would add the whole delay here too).
    other = statistics.median(lab.rtts("a1", "b2", 20))
    assert other < baseline + 0.1 * DELAY_MS + 1.0, (other, baseline)

    # Zero means zero: the same fault re-added with delay 0 restores the link.
    lab.fault("add", "slow", "--from", "pod/default/a1", "--to", "pod/default/a2",
              "--direction", "to", "--delay-ms", "0")
    wait_for(lambda: statistics.median(lab.rtts("a1", "a2", 3)) < baseline + DELAY_MS / 2,
             20, interval_s=0.2, what="delay 0 in force")
    # "Within noise": less than a tenth of the delay left over (a stuck delay leaves ~1.0).
    assert median_delta_ms(lab, baseline) / DELAY_MS < 0.1

    lab.fault("add", "slow", "--from", "pod/default/a1", "--to", "pod/default/a2",
              "--direction", "to", "--delay-ms", f"{DELAY_MS:g}")
    wait_for(lambda: statistics.median(lab.rtts("a1", "a2", 3)) > baseline + DELAY_MS / 2,
             20, interval_s=0.2, what="the delay in force again")
    lab.fault("del", "slow")
    wait_for(lambda: statistics.median(lab.rtts("a1", "a2", 3)) < baseline + DELAY_MS / 2,
             20, interval_s=0.2, what="the delay gone after delete")
    assert median_delta_ms(lab, baseline) / DELAY_MS < 0.1


def add_loss(lab: Lab, seed: int) -> None:
    lab.fault("add", "lossy", "--from", "pod/default/a1", "--to", "pod/default/a2",
              "--direction", "to", "--protocol", "udp", "--loss-pct", f"{LOSS_PCT:g}",
              "--seed", str(seed))
    # In force once a probe flow (its own ephemeral port: its own sequence numbers, so the
    # measured flow is not touched) loses something: P(nothing lost of 200 at 10%) ~ 1e-9.
    wait_for(lambda: lab.udp_lost("a1", "a2", 200), 20, interval_s=0.2,
             what="the loss in force")


def test_loss_is_binomial_and_the_same_seed_drops_the_same_datagrams(lab: Lab) -> None:
    # Without a fault nothing is lost (batches fit the receiver's buffer): every loss below
    # is the fault's.
    assert lab.udp_lost("a1", "a2", DATAGRAMS, SPORT) == []

    add_loss(lab, SEED)
    first = lab.udp_lost("a1", "a2", DATAGRAMS, SPORT)
    p = LOSS_PCT / 100
    mean, sd = DATAGRAMS * p, math.sqrt(DATAGRAMS * p * (1 - p))
    # Binomial(2000, 0.1): 200 +- 13.4; 3 standard deviations hold with 99.7%. Loss applied
    # both ways (request or echo) would be ~380, none 0: both far outside.
    assert abs(len(first) - mean) <= 3 * sd, f"{len(first)} lost of {DATAGRAMS}"

    # The same seed and the same traffic: the same sequence numbers dropped.
    lab.fault("del", "lossy")
    wait_for(lambda: not lab.udp_lost("a1", "a2", 100), 20, interval_s=0.2,
             what="the loss gone")
    add_loss(lab, SEED)
    second = lab.udp_lost("a1", "a2", DATAGRAMS, SPORT)
    assert second == first

    # ...and another seed drops others (so the equality above says something).
    lab.fault("del", "lossy")
    wait_for(lambda: not lab.udp_lost("a1", "a2", 100), 20, interval_s=0.2,
             what="the loss gone")
    add_loss(lab, SEED + 1)
    other = lab.udp_lost("a1", "a2", DATAGRAMS, SPORT)
    assert abs(len(other) - mean) <= 3 * sd, f"{len(other)} lost of {DATAGRAMS}"
    assert other != first
    lab.fault("del", "lossy")
    wait_for(lambda: not lab.udp_lost("a1", "a2", 100), 20, interval_s=0.2,
             what="the loss gone")


def bulk_kbit(lab: Lab, size: int) -> float:
    words = lab.ask("a1", f"/bulk?host={lab.ip['a2']}&bytes={size}").split()
    assert words[0] == "kbit" and int(words[3]) == size, words
    return float(words[1])


def test_rate_is_what_was_set(lab: Lab) -> None:
    lab.fault("add", "narrow", "--from", "pod/default/a1", "--to", "pod/default/a2",
              "--direction", "to", "--protocol", "tcp", "--rate-kbit", f"{RATE_KBIT:g}")
    # Unlimited, this path moves tens of Mbit/s; in force once a short transfer is slow.
    wait_for(lambda: bulk_kbit(lab, 100_000) < 1.5 * RATE_KBIT, 20, interval_s=0.2,
             what="the rate limit in force")
    ratio = bulk_kbit(lab, BULK_BYTES) / RATE_KBIT
    assert 0.85 <= ratio <= 1.15, f"measured/configured rate {ratio:.3f}"
    lab.fault("del", "narrow")
    wait_for(lambda: bulk_kbit(lab, 100_000) > 2 * RATE_KBIT, 20, interval_s=0.2,
             what="the rate limit gone")


def sent_and_counted(lab: Lab, src: str, dst: str, tag: str, n: int = 20) -> None:
    assert lab.ask(src, f"/send?host={lab.ip[dst]}&n={n}&tag={tag}").strip() == f"sent {n}"


def count(lab: Lab, pod: str, tag: str) -> int:
    return int(lab.ask(pod, f"/count?tag={tag}"))


def test_a_one_way_partition_blocks_only_that_direction(lab: Lab) -> None:
    lab.fault("add", "oneway", "--from", "pod/default/a1", "--to", "pod/default/b2",
              "--partition", "--direction", "to")
    wait_for(lambda: lab.connects("a1", "b2")["b2"] == "timeout", 20, interval_s=0.2,
             what="the partition in force")
    # Blocked a1 -> b2 first, then the open way b2 -> a1: once all of the second arrived,
    # the first (sent earlier on the same path) would have, had it not been cut.
    sent_and_counted(lab, "a1", "b2", "cut")
    sent_and_counted(lab, "b2", "a1", "open")
    wait_for(lambda: count(lab, "a1", "open") == 20, 20, interval_s=0.2,
             what="b2 -> a1 datagrams arriving")
    assert count(lab, "b2", "cut") == 0
    # A TCP connect from the blocked side times out (its SYN never arrives; no refusal).
    assert lab.connects("a1", "b2", "a2", "b1") == {"b2": "timeout", "a2": "ok", "b1": "ok"}
    lab.fault("del", "oneway")
    wait_for(lambda: lab.connects("a1", "b2")["b2"] == "ok", 20, interval_s=0.2,
             what="the partition healed")
    sent_and_counted(lab, "a1", "b2", "healed")
    wait_for(lambda: count(lab, "b2", "healed") == 20, 20, interval_s=0.2,
             what="a1 -> b2 datagrams arriving after the delete")


def test_a_two_way_partition_between_sets_leaves_each_set_untouched(lab: Lab) -> None:
    # set=a and set=b each span both nodes: inside a set there is same-node and cross-node
    # traffic, and between the sets too (chaos-mesh#1450 cut traffic inside the source set).
    lab.fault("add", "split", "--from", "set=a", "--to", "set=b", "--partition")
    wait_for(lambda: lab.connects("a1", "b1")["b1"] == "timeout", 20, interval_s=0.2,
             what="the partition in force")
    assert lab.connects("a1", "a2", "b1", "b2") == {"a2": "ok", "b1": "timeout",
                                                    "b2": "timeout"}
    assert lab.connects("b2", "b1", "a1", "a2") == {"b1": "ok", "a1": "timeout",
                                                    "a2": "timeout"}
    # UDP inside each set, across the nodes, still arrives.
    # Across the cut on one node first: once the later ones arrived, these would have too.
    sent_and_counted(lab, "a2", "b2", "between")
    sent_and_counted(lab, "a1", "a2", "inside-a")
    sent_and_counted(lab, "b2", "b1", "inside-b")
    wait_for(lambda: count(lab, "a2", "inside-a") == 20 and count(lab, "b1", "inside-b") == 20,
             20, interval_s=0.2, what="datagrams inside each set arriving")
    assert count(lab, "b2", "between") == 0
    lab.fault("del", "split")
    wait_for(lambda: lab.connects("a1", "b1", "b2") == {"b1": "ok", "b2": "ok"}, 20,
             interval_s=0.2, what="the partition healed")
