#!/usr/bin/env python3
"""Where the time to first token goes, hop by hop, from a loopback capture of a TTFT run.

    apt-get install tcpdump        # not installed by the scripts
    tcpdump -i lo -s 400 -U -w /tmp/lo.pcap &
    PARTS=ttft N=150 bench/agent_path.sh   # prints "# stack: nats :P, redis :P, postgres :P,
    kill %1                                #   scripted LLM :P ..., gateway :P ..."
    python3 bench/agent/ttft_hops.py /tmp/lo.pcap --nats P --redis P --pg P --llm P --gw P

Turns run one at a time in that benchmark, so the packets between a client's
`POST /api/v1/query/stream` and the gateway's first `event: token` belong to that turn. For each
turn the script takes the first packet of every hop in order and prints the p50 of the time
from one hop to the next, for turns that read PostgreSQL (first turns) and those that did not.
Python standard library only; reads classic pcap (Ethernet or Linux cooked) of IPv4 TCP.
"""

import argparse
import statistics
import struct
import sys

HOPS = [
    ("client->gw", "request head in"),
    ("gw->nats query", "gateway publishes wf.query"),
    ("nats->lw", "wf-lightweight gets it"),
    ("lw->nats heavy", "wf-lightweight publishes wf.heavy.query"),
    ("nats->heavy", "JetStream delivers to wf-heavy"),
    ("heavy->redis", "wf-heavy sends the lock-and-load script"),
    ("redis->heavy", "Redis answers"),
    ("heavy->pg", "wf-heavy reads PostgreSQL"),
    ("pg->heavy", "PostgreSQL answers"),
    ("heavy->llm", "LLM request on the wire"),
    ("llm->heavy", "LLM response head"),
    ("heavy->nats token", "wf-heavy publishes the first token"),
    ("gw->client token", "the client gets `event: token`"),
]


def packets(path):
    with open(path, "rb") as f:
        header = f.read(24)
        magic = struct.unpack("<I", header[:4])[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            sys.exit("ttft_hops.py: not a little-endian classic pcap file")
        scale = 1e9 if magic == 0xA1B23C4D else 1e6
        link = struct.unpack("<I", header[20:24])[0]
        offset = {1: 14, 113: 16}.get(link)
        if offset is None:
            sys.exit(f"ttft_hops.py: link type {link} not supported")
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            sec, frac, incl, _ = struct.unpack("<IIII", record)
            data = f.read(incl)
            ip = data[offset:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 15) * 4:]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:]
            if payload:
                yield sec + frac / scale, sport, dport, payload


def classify(sport, dport, payload, ports, heavy):
    """The hop a packet is, or None. `heavy` holds wf-heavy's NATS client port once seen."""
    head = payload[:200]
    if dport == ports.gw and b"POST /api/v1/query/stream" in head:
        return "client->gw"
    if sport == ports.gw and b"event: token" in payload:
        return "gw->client token"
    if dport == ports.nats and b"PUB wf.query " in head:
        return "gw->nats query"
    if sport == ports.nats and b"MSG wf.query " in head:
        return "nats->lw"
    if dport == ports.nats and b"PUB wf.heavy.query" in head:
        heavy.setdefault("lightweight", set()).add(sport)
        return "lw->nats heavy"
    if sport == ports.nats and b"MSG wf.heavy.query" in head:
        heavy["port"] = dport
        return "nats->heavy"
    if dport == ports.redis:
        return "heavy->redis"
    if sport == ports.redis:
        return "redis->heavy"
    if dport == ports.pg and (b"wf_load_history" in payload or b"wf_session_exists" in payload):
        # A first turn's question (does PostgreSQL hold the session?) or its history read;
        # stores and other statements are not on the path.
        return "heavy->pg"
    if sport == ports.pg:
        return "pg->heavy"
    if dport == ports.llm and b"POST" in head:
        return "heavy->llm"
    if sport == ports.llm:
        return "llm->heavy"
    if (dport == ports.nats and b"PUB _INBOX" in head
            and sport not in heavy.get("lightweight", ())):
        # wf-heavy's first event of the turn, on whichever of its connections (its queries come
        # through a connection of their own); wf-lightweight's `queued` is told apart by port.
        return "heavy->nats token"
    return None


def turns(events):
    """The tagged packets of each turn, from its request to its first token."""
    current = None
    for t, tag in events:
        if tag == "client->gw":
            current = [(t, tag)]
        elif current is not None and tag is not None:
            current.append((t, tag))
            if tag == "gw->client token":
                yield current
                current = None


def report(label, selected):
    print(f"{label}: {len(selected)} turns")
    if not selected:
        return
    totals = [(turn[-1][0] - turn[0][0]) * 1e3 for turn in selected]
    print(f"  request -> first token p50 {statistics.median(totals):.3f} ms")
    # Per turn, the first packet of each hop in HOPS order (hops it lacks are skipped).
    gaps = {}
    for turn in selected:
        previous = turn[0]
        for name, _ in HOPS[1:]:
            found = next((t for t, tag in turn if tag == name and t >= previous[0]), None)
            if found is None:
                continue
            gaps.setdefault((previous[1], name), []).append((found - previous[0]) * 1e3)
            previous = (found, name)
    what = dict(HOPS)
    for (a, b), values in sorted(gaps.items(), key=lambda kv: -len(kv[1])):
        if len(values) * 2 >= len(selected):
            print(f"  {a:>18} -> {b:<18} p50 {statistics.median(values):.3f} ms  ({what[b]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pcap")
    for name in ("nats", "redis", "pg", "llm", "gw"):
        parser.add_argument(f"--{name}", type=int, required=True, help=f"{name} port")
    ports = parser.parse_args()
    heavy = {}
    events = ((t, classify(s, d, p, ports, heavy)) for t, s, d, p in packets(ports.pcap))
    all_turns = list(turns(events))
    first = [turn for turn in all_turns if any(tag == "heavy->pg" for _, tag in turn)]
    follow = [turn for turn in all_turns if not any(tag == "heavy->pg" for _, tag in turn)]
    report("turns that read PostgreSQL (first turns)", first)
    report("turns answered from Redis (follow-ups)", follow)


if __name__ == "__main__":
    main()
