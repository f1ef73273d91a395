#!/usr/bin/env python3
"""Agent-path benchmarks (stdlib only). Started by bench/agent_path.sh against a stack it runs.

Subcommands:
  ttft    --gw PORT --llm PORT [--n 200]          time to first token, direct vs through the gateway
  turns   --gw PORT [--k 16] [--seconds 10] --pids name=PID,...   agent turns/s (non-stream)
  soak    --gw PORT [--k 16] --turns 100000 [--report-every 20000] --pids name=PID,...
          a fixed number of agent turns; turns/s and RSS at the start, every report-every turns,
          at the end and after a pause (leak check)
  streams --gw PORT --llm PORT --count N --gw-pid PID [--heavy-pid PID --heavy-admin PORT
          --llm-pid PID --hold S]   N concurrent hanging SSE streams held for S seconds
"""
import argparse
import http.client
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    i = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[i]


def proc_status_value(pid, field):
    """The integer after `field:` in /proc/PID/status (VmRSS is in KiB), or -1."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def run_threads(worker, k):
    """Runs worker(0) .. worker(k-1) on k threads and waits for all of them."""
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(k)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def rss_kib(pid):
    return proc_status_value(pid, "VmRSS")


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def thread_count(pid):
    return proc_status_value(pid, "Threads")


def mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib >= 0 else "?"


def fmt_ms(x):
    return f"{x * 1000:.3f} ms"


# ---------------------------------------------------------------- 1. TTFT
# Matches the scripted LLM's "hi" rule (agent_path.sh): a ten-token reply, no delay.
TTFT_MESSAGE = "hi there"


class DirectLlm:
    """Streamed chat completions straight at the scripted LLM over one kept-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.body = json.dumps({"model": "scripted", "stream": True,
                                "messages": [{"role": "user", "content": TTFT_MESSAGE}]})

    def once(self):
        """Seconds to the first content chunk, or None on an error."""
        try:
            t0 = time.perf_counter()
            self.conn.request("POST", "/v1/chat/completions", self.body,
                              {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            t_first = None
            while True:
                line = resp.readline()
                if not line:
                    break
                if t_first is None and line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if payload and payload != b"[DONE]":
                        ch = json.loads(payload).get("choices") or []
                        if ch and (ch[0].get("delta") or {}).get("content"):
                            t_first = time.perf_counter() - t0
            resp.read()
            return t_first if resp.status == 200 else None
        except Exception:  # noqa: BLE001 - counted by the caller; reconnect
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return None

    def close(self):
        self.conn.close()


class GatewayStream:
    """POST /api/v1/query/stream over one kept-alive connection (or a new connection per turn:
    the request says `Connection: close`, and the connect is in the time)."""

    def __init__(self, port, new_connections=False):
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        if new_connections:
            self.headers["Connection"] = "close"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def once(self, session_id):
        """Seconds to the first `event: token`, or None on an error."""
        body = json.dumps({"message": TTFT_MESSAGE, "session_id": session_id})
        try:
            t0 = time.perf_counter()
            self.conn.request("POST", "/api/v1/query/stream", body, self.headers)
            resp = self.conn.getresponse()
            t_first = None
            while True:
                line = resp.readline()
                if not line:
                    break
                if t_first is None and line.startswith(b"event: token"):
                    t_first = time.perf_counter() - t0
            resp.read()
            if resp.will_close:
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return t_first if resp.status == 200 else None
        except Exception:  # noqa: BLE001
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return None

    def close(self):
        self.conn.close()


def ttft_samples(llm_port, gw_port, n, prefix, new_connections=False, interleaved=False):
    """N direct LLM requests and N new sessions through the gateway, two turns each.

    A first turn finds no history in Redis and looks in PostgreSQL; a follow-up finds the first
    turn's history in Redis. Both are measured because a chat has one of the former and many of
    the latter. Sequential (the default, the figure the target is judged on): all direct
    requests back to back, then all turns. Interleaved: each round is one direct request, then
    a session's first turn, then its follow-up, so the series see the same minutes of the VM;
    but the LLM's thread for the direct connection then idles through two gateway turns before
    each direct request, which makes the direct figure ~0.2 ms slower here and the "added"
    figure lower by as much, so it is not the one to judge the target by.
    Returns (direct, first, follow-up, errors)."""
    direct, gateway = DirectLlm(llm_port), GatewayStream(gw_port, new_connections)
    d, first, follow, errors = [], [], [], 0
    in_a_row = 0

    def keep(series, t):
        nonlocal errors, in_a_row
        if t is None:
            errors += 1
            in_a_row += 1
            # Each failure may have waited for the 30 s timeout: a stack that is not answering
            # ends the run instead of retrying for hours.
            if in_a_row >= 3:
                sys.exit(f"ttft: {in_a_row} requests in a row failed ({errors} in all): "
                         "is the stack (scripted LLM, gateway) answering?")
        else:
            in_a_row = 0
            series.append(t)

    if interleaved:
        for i in range(n):
            keep(d, direct.once())
            keep(first, gateway.once(f"{prefix}-{i}"))
            keep(follow, gateway.once(f"{prefix}-{i}"))
    else:
        for _ in range(n):
            keep(d, direct.once())
        for i in range(n):
            keep(first, gateway.once(f"{prefix}-{i}"))
            keep(follow, gateway.once(f"{prefix}-{i}"))
    direct.close()
    gateway.close()
    return d, first, follow, errors


def cmd_ttft(a):
    # Warm both paths (connections, caches, NATS subscriptions).
    ttft_samples(a.llm, a.gw, 10, f"bench-warm-{os.getpid()}")
    interleaved = a.order == "interleaved"
    d, g1, g2, errors = ttft_samples(a.llm, a.gw, a.n, f"bench-{os.getpid()}",
                                     a.new_connections, interleaved)
    print(f"== 1. TTFT, N={a.n} rounds, {a.order} (direct: keep-alive; gateway: "
          f"{'a new connection per turn' if a.new_connections else 'keep-alive'})")
    print(f"direct LLM          : p50 {fmt_ms(pct(d, 50))}  p99 {fmt_ms(pct(d, 99))}  "
          f"ok {len(d)}")
    for label, g in (("first turn", g1), ("follow-up turn", g2)):
        print(f"via gateway, {label:14}: p50 {fmt_ms(pct(g, 50))}  p99 {fmt_ms(pct(g, 99))}  "
              f"ok {len(g)}")
        # The series are separate requests, so the p99 difference is a difference of tails; when
        # the direct series has the higher tail (a stall of the machine during it), there is no
        # meaningful figure to print.
        tail = pct(g, 99) - pct(d, 99)
        tail_text = fmt_ms(tail) if tail >= 0 else "n/a (the direct series' p99 is the higher)"
        print(f"  added             : p50 {fmt_ms(pct(g, 50) - pct(d, 50))}  "
              f"p99 {tail_text}  (target <= 1 ms added at p50)")
    print(f"errors              : {errors}")


# ---------------------------------------------------------------- 2. turns/s
def cmd_turns(a):
    pids = dict(kv.split("=") for kv in a.pids.split(",") if kv)
    before = {k: rss_kib(v) for k, v in pids.items()}
    stop_at = time.perf_counter() + a.seconds
    lat = [[] for _ in range(a.k)]
    errs = [0] * a.k
    status_seen = {}
    lock = threading.Lock()
    path = "/api/v1/query/stream" if a.stream else "/api/v1/query"
    token_events = [0] * a.k

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", a.gw, timeout=30)
        i = 0
        while time.perf_counter() < stop_at:
            body = json.dumps({"message": "hi there", "session_id": f"turns-{os.getpid()}-{t}-{i}"})
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                # A stream is whole when its `done` event (the answer, from wf-heavy) came.
                ok = (resp.status == 200 and b'"routed_to":"heavy"' in data.replace(b' ', b'')
                      and (not a.stream or b"event: done" in data))
                if ok and a.stream:
                    token_events[t] += data.count(b"event: token")
                if ok:
                    lat[t].append(dt)
                else:
                    errs[t] += 1
                    with lock:
                        status_seen[resp.status] = status_seen.get(resp.status, 0) + 1
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", a.gw, timeout=30)
            except Exception as e:  # noqa: BLE001
                errs[t] += 1
                with lock:
                    status_seen[type(e).__name__] = status_seen.get(type(e).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", a.gw, timeout=30)
        conn.close()

    t_start = time.perf_counter()
    run_threads(worker, a.k)
    elapsed = time.perf_counter() - t_start
    after = {k: rss_kib(v) for k, v in pids.items()}
    all_lat = [x for l in lat for x in l]
    print(f"== 2. Agent turns/s, POST {path}, K={a.k} threads, {a.seconds:.0f} s, "
          f"new session per request, zero-delay scripted LLM")
    print(f"turns        : {len(all_lat)} in {elapsed:.2f} s = {len(all_lat) / elapsed:.1f} turns/s")
    if a.stream and all_lat:
        print(f"token events : {sum(token_events) / len(all_lat):.1f} per streamed turn")
    print(f"latency      : p50 {fmt_ms(pct(all_lat, 50))}  p99 {fmt_ms(pct(all_lat, 99))}")
    print(f"errors       : {sum(errs)} {status_seen if status_seen else ''}")
    for k in pids:
        print(f"RSS {k:<10}: before {before[k] / 1024:.1f} MiB, after {after[k] / 1024:.1f} MiB")


# ---------------------------------------------------------------- 2b. soak: fixed number of turns
def cmd_soak(a):
    pids = dict(kv.split("=") for kv in a.pids.split(",") if kv)
    lock = threading.Lock()
    state = {"issued": 0, "ok": 0, "errors": 0, "next_report": a.report_every}
    status_seen = {}
    lat_window = []
    reports = []
    t_start = time.perf_counter()
    last = {"t": t_start, "ok": 0}

    def rss_line():
        return "  ".join(f"RSS {k} {mib(rss_kib(v))}" for k, v in pids.items())

    def report(label):
        now = time.perf_counter()
        with lock:
            ok, errors = state["ok"], state["errors"]
            window = list(lat_window)
            lat_window.clear()
            done_since = ok - last["ok"]
            dt = now - last["t"]
            last["t"], last["ok"] = now, ok
        rate = done_since / dt if dt > 0 else 0.0
        rss = {k: rss_kib(v) for k, v in pids.items()}
        reports.append((label, ok, rss))
        lat = (f"p50 {fmt_ms(pct(window, 50))} p99 {fmt_ms(pct(window, 99))}"
               if window else "")
        print(f"{label:<14}: turns {ok:>7}  errors {errors}  {rate:7.1f} turns/s (interval)  {lat}  "
              + "  ".join(f"RSS {k} {mib(v)}" for k, v in rss.items()), flush=True)

    print(f"== 2b. Soak: {a.turns} agent turns, POST /api/v1/query, K={a.k} threads, new session per "
          f"request, zero-delay scripted LLM", flush=True)
    report("start")

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", a.gw, timeout=30)
        while True:
            with lock:
                if state["issued"] >= a.turns:
                    break
                i = state["issued"]
                state["issued"] += 1
            body = json.dumps({"message": "hi there", "session_id": f"soak-{os.getpid()}-{i}"})
            t0 = time.perf_counter()
            ok = False
            try:
                conn.request("POST", "/api/v1/query", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and b'"routed_to":"heavy"' in data.replace(b' ', b'')
                if not ok:
                    key = resp.status
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", a.gw, timeout=30)
            except Exception as e:  # noqa: BLE001
                key = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", a.gw, timeout=30)
            dt = time.perf_counter() - t0
            due = False
            with lock:
                if ok:
                    state["ok"] += 1
                    lat_window.append(dt)
                else:
                    state["errors"] += 1
                    status_seen[key] = status_seen.get(key, 0) + 1
                if state["ok"] + state["errors"] >= state["next_report"]:
                    due = state["next_report"]
                    state["next_report"] += a.report_every
            if due:
                report(f"after {due}")
        conn.close()

    run_threads(worker, a.k)
    elapsed = time.perf_counter() - t_start
    report("end")
    time.sleep(a.settle)
    last["t"] = time.perf_counter()
    report(f"idle {a.settle:.0f} s later")
    print(f"total         : {state['ok']} ok turns in {elapsed:.1f} s = {state['ok'] / elapsed:.1f} turns/s; "
          f"errors {state['errors']} {status_seen if status_seen else ''}")
    first_report = next((r for r in reports if r[0].startswith("after")), reports[0])
    for k in pids:
        start, plateau, end = reports[0][2][k], first_report[2][k], reports[-1][2][k]
        print(f"RSS {k:<10}: start {mib(start)}, after the first {first_report[1]} turns {mib(plateau)}, "
              f"end {mib(end)} (end - first report: {(end - plateau) / 1024:+.1f} MiB)")
    raise SystemExit(0 if state["errors"] == 0 else 1)


# ---------------------------------------------------------------- 3. concurrent streams
class Stream:
    __slots__ = ("sock", "out", "buf", "status", "headers_done", "heartbeat", "other_event",
                 "closed", "error")

    def __init__(self):
        self.sock = None
        self.out = b""
        self.buf = b""
        self.status = 0
        self.headers_done = False
        self.heartbeat = False
        self.other_event = None
        self.closed = False
        self.error = None


def llm_stats(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/_stats")
        r = c.getresponse()
        d = json.loads(r.read())
        c.close()
        return d
    except Exception:  # noqa: BLE001
        return {}


def heavy_metrics(port):
    if not port:
        return ""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except Exception as e:  # noqa: BLE001
        return f"({e})"
    keep = ("wf_heavy_active_turns", "wf_heavy_turns_started_total", "wf_heavy_turns_ok_total",
            "wf_heavy_turns_cancelled_total", "wf_heavy_turns_failed_total",
            "wf_heavy_turn_objects")
    out = []
    for line in text.splitlines():
        if line.startswith(keep):
            name, _, val = line.rpartition(" ")
            out.append(f"{name.replace('wf_heavy_', '')}={val}")
    return " ".join(out)


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need and soft != resource.RLIM_INFINITY:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(need, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def cmd_streams(a):
    limit = raise_fd_limit(a.count + 256)
    if limit < a.count + 256:
        print(f"streams: {a.count} sockets do not fit the open-files limit {limit} of one process")
        raise SystemExit(1)
    sel = selectors.DefaultSelector()
    streams = []
    pending = list(range(a.count))
    pending.reverse()
    inflight = 0  # connecting or waiting for headers
    max_inflight = 200
    t_start = time.perf_counter()
    deadline = t_start + a.timeout
    gw_before = rss_kib(a.gw_pid)
    heavy_before = rss_kib(a.heavy_pid) if a.heavy_pid else -1
    llm_before = rss_kib(a.llm_pid) if a.llm_pid else -1

    def open_one(i):
        s = Stream()
        body = json.dumps({"message": "please hang on", "session_id": f"hang-{os.getpid()}-{a.count}-{i}"})
        s.out = (f"POST /api/v1/query/stream HTTP/1.1\r\nHost: 127.0.0.1:{a.gw}\r\n"
                 f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
        sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sk.setblocking(False)
        err = sk.connect_ex(("127.0.0.1", a.gw))
        if err not in (0, 115):  # EINPROGRESS
            s.error = f"connect {os.strerror(err)}"
            sk.close()
            s.closed = True
            return s
        s.sock = sk
        sel.register(sk, selectors.EVENT_WRITE, s)
        return s

    def pump(timeout):
        """Handles socket events for up to `timeout` seconds."""
        nonlocal inflight
        for key, ev in sel.select(timeout=timeout):
            s = key.data
            sk = s.sock
            try:
                if ev & selectors.EVENT_WRITE:
                    err = sk.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    n = sk.send(s.out)
                    s.out = s.out[n:]
                    if not s.out:
                        sel.modify(sk, selectors.EVENT_READ, s)
                    continue
                data = sk.recv(65536)
                if not data:
                    raise OSError("closed by gateway")
                s.buf += data
                if not s.headers_done:
                    end = s.buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = s.buf[:end].decode("latin-1")
                    s.status = int(head.split(" ", 2)[1])
                    s.headers_done = True
                    s.buf = s.buf[end + 4:]
                    inflight -= 1
                if b": heartbeat" in s.buf or b":heartbeat" in s.buf:
                    s.heartbeat = True
                if b"event: " in s.buf and s.other_event is None:
                    idx = s.buf.find(b"event: ")
                    s.other_event = s.buf[idx:idx + 200].split(b"\n")[0].decode("latin-1", "replace")
                s.buf = s.buf[-64:]  # keep only a tail for the heartbeat search
            except OSError as e:
                if not s.headers_done:
                    inflight -= 1
                s.error = str(e)
                s.closed = True
                sel.unregister(sk)
                sk.close()

    def done(s):
        return s.closed or (s.headers_done and (s.heartbeat or s.status != 200))

    # Phase 1: open every stream (at most max_inflight waiting for their headers at a time);
    # each must answer 200 and send a heartbeat.
    while time.perf_counter() < deadline:
        while pending and inflight < max_inflight:
            s = open_one(pending.pop())
            streams.append(s)
            if not s.closed:
                inflight += 1
        if not pending and all(done(s) for s in streams):
            break
        pump(0.2)
    t_open = time.perf_counter() - t_start

    # Phase 2: every turn must reach the scripted LLM and hang there (heavy holds them all).
    t_llm = time.perf_counter()
    st = {}
    hv = ""
    while time.perf_counter() < deadline:
        st = llm_stats(a.llm)
        hv = heavy_metrics(a.heavy_admin)
        if st.get("active") == a.count and (not a.heavy_admin or f"active_turns={a.count}" in hv):
            break
        pump(0.5)
    all_at_llm = st.get("active") == a.count
    t_llm = time.perf_counter() - t_llm

    # Phase 3: hold them open; nothing may fail meanwhile (heartbeats keep flowing).
    for s in streams:
        s.heartbeat = False
        s.buf = b""
    hold_end = time.perf_counter() + a.hold
    while time.perf_counter() < hold_end:
        pump(0.2)
    held = sum(1 for s in streams if not s.closed and s.status == 200 and s.heartbeat
               and s.other_event is None)

    gw_open, gw_fds = rss_kib(a.gw_pid), fd_count(a.gw_pid)
    heavy_open = rss_kib(a.heavy_pid) if a.heavy_pid else -1
    heavy_fds = fd_count(a.heavy_pid) if a.heavy_pid else -1
    llm_open = rss_kib(a.llm_pid) if a.llm_pid else -1
    llm_threads = thread_count(a.llm_pid) if a.llm_pid else -1
    st_open = llm_stats(a.llm)
    hv_open = heavy_metrics(a.heavy_admin)

    got200 = sum(1 for s in streams if s.headers_done and s.status == 200)
    non200 = {}
    for s in streams:
        if s.headers_done and s.status != 200:
            non200[s.status] = non200.get(s.status, 0) + 1
    errors = {}
    for s in streams:
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    early_events = {}
    for s in streams:
        if s.other_event:
            early_events[s.other_event[:60]] = early_events.get(s.other_event[:60], 0) + 1
    never = a.count - len(streams) + sum(1 for s in streams if not s.closed and not s.headers_done)
    print(f"== 3. {a.count} concurrent SSE streams (hanging LLM answer, heartbeat 1 s), "
          f"one selectors process (open-files limit {limit})")
    print(f"opened       : {len(streams)} in {t_open:.2f} s; HTTP 200 headers {got200}; "
          f"no headers {never}")
    print(f"at the LLM   : {st.get('active')} hanging completions {t_llm:.2f} s after the last "
          f"stream opened (requests so far {st.get('requests')})")
    print(f"held {a.hold:.0f} s    : {held} streams still open, each with a heartbeat during the hold "
          f"and no other event")
    print(f"non-200      : {non200 if non200 else 0}")
    print(f"errors       : {sum(errors.values())} {errors if errors else ''}")
    print(f"events seen  : {early_events if early_events else 'none (only heartbeats)'}")
    print(f"LLM stats    : active {st_open.get('active')}, requests {st_open.get('requests')}, "
          f"client_disconnects {st_open.get('client_disconnects')}")
    print(f"heavy        : {hv_open}")
    print(f"gateway      : RSS {mib(gw_before)} before, {mib(gw_open)} with streams open "
          f"(+{(gw_open - gw_before) / max(1, got200):.1f} KiB per stream), {gw_fds} fds")
    if a.heavy_pid:
        print(f"wf-heavy     : RSS {mib(heavy_before)} before, {mib(heavy_open)} with streams open, "
              f"{heavy_fds} fds")
    if a.llm_pid:
        print(f"scripted LLM : RSS {mib(llm_before)} before, {mib(llm_open)} with streams open, "
              f"{llm_threads} threads")

    # Close every stream; the gateway must cancel every turn -> the LLM connections drop.
    t_close = time.perf_counter()
    for s in streams:
        if not s.closed:
            try:
                sel.unregister(s.sock)
            except (KeyError, ValueError):
                pass
            s.sock.close()
            s.closed = True
    sel.close()
    active = None
    cancel_deadline = time.perf_counter() + 60
    while time.perf_counter() < cancel_deadline:
        active = llm_stats(a.llm).get("active")
        if active == 0:
            break
        time.sleep(0.1)
    print(f"after close  : scripted-LLM active completions {active} after "
          f"{time.perf_counter() - t_close:.2f} s (0 = every turn cancelled); "
          f"gateway RSS {mib(rss_kib(a.gw_pid))}, {fd_count(a.gw_pid)} fds")
    t_hv = time.perf_counter() + 60
    hv = heavy_metrics(a.heavy_admin)
    while (a.heavy_admin and ("active_turns=0" not in hv or "turn_objects=0" not in hv)
           and time.perf_counter() < t_hv):
        time.sleep(0.2)
        hv = heavy_metrics(a.heavy_admin)
    print(f"heavy after  : {hv} ({time.perf_counter() - t_close:.2f} s after close); "
          f"RSS {mib(rss_kib(a.heavy_pid) if a.heavy_pid else -1)}")
    ok = (got200 == a.count and held == a.count and all_at_llm and not errors and not non200
          and not early_events and active == 0 and (not a.heavy_admin or "active_turns=0" in hv))
    print(f"result       : {'OK' if ok else 'INCOMPLETE'}")
    raise SystemExit(0 if ok else 1)


def cmd_stream_messages(a):
    """Prints how many messages a JetStream stream holds ($JS.API.STREAM.INFO over plain NATS)."""
    with socket.create_connection(("127.0.0.1", a.nats), timeout=5) as sock:
        f = sock.makefile("rb")
        f.readline()  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.bench_si 1\r\n'
                     b"PUB $JS.API.STREAM.INFO." + a.stream.encode() + b" _INBOX.bench_si 0\r\n\r\n")
        while True:
            line = f.readline()
            if not line:
                raise SystemExit("stream-messages: connection closed")
            if line.startswith(b"MSG"):
                body = json.loads(f.read(int(line.split()[-1]) + 2)[:-2])
                if "state" not in body:
                    raise SystemExit(f"stream-messages: {body}")
                print(body["state"]["messages"])
                return
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("ttft")
    t.add_argument("--gw", type=int, required=True)
    t.add_argument("--llm", type=int, required=True)
    t.add_argument("--n", type=int, default=200)
    t.add_argument("--new-connections", action="store_true",
                   help="a new TCP connection per gateway turn (Connection: close)")
    t.add_argument("--order", choices=("sequential", "interleaved"), default="sequential",
                   help="sequential: all direct requests, then the turns; interleaved: a "
                        "direct request, a first turn and its follow-up per round (see "
                        "ttft_samples: its direct figure is slower, its added one lower)")
    u = sub.add_parser("turns")
    u.add_argument("--gw", type=int, required=True)
    u.add_argument("--k", type=int, default=16)
    u.add_argument("--seconds", type=float, default=10)
    u.add_argument("--pids", default="")
    u.add_argument("--stream", action="store_true",
                   help="POST /api/v1/query/stream (SSE, read to its end) instead of /api/v1/query")
    k = sub.add_parser("soak")
    k.add_argument("--gw", type=int, required=True)
    k.add_argument("--k", type=int, default=16)
    k.add_argument("--turns", type=int, default=100000)
    k.add_argument("--report-every", type=int, default=20000)
    k.add_argument("--settle", type=float, default=10)
    k.add_argument("--pids", default="")
    s = sub.add_parser("streams")
    s.add_argument("--gw", type=int, required=True)
    s.add_argument("--llm", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--gw-pid", type=int, required=True)
    s.add_argument("--heavy-pid", type=int, default=0)
    s.add_argument("--llm-pid", type=int, default=0)
    s.add_argument("--hold", type=float, default=5)
    s.add_argument("--timeout", type=float, default=120)
    s.add_argument("--heavy-admin", type=int, default=0)
    m = sub.add_parser("stream-messages")
    m.add_argument("--nats", type=int, required=True)
    m.add_argument("--stream", required=True)
    a = p.parse_args()
    {"ttft": cmd_ttft, "turns": cmd_turns, "soak": cmd_soak, "streams": cmd_streams,
     "stream-messages": cmd_stream_messages}[a.cmd](a)


if __name__ == "__main__":
    main()
