#!/usr/bin/env python3
# wf-gateway's RSS with STREAMS (default 4) streams whose clients never read (receive buffer
# 4 KiB) while the stand-in worker floods TOKENS (default 40000) token events of 500 bytes each,
# then 3 s after the clients closed; then tcmalloc's own figures (through gdb, as root) and the
# RSS after MallocExtension_ReleaseFreeMemory(). Needs nats-server, gdb and ports 14555/18555.
#   gateway/bench/slow_readers.py build/bin/wf-gateway build/tests/gateway_stand_in_worker \
#       '{"agent":{"turn_timeout_ms":120000}}' new
import json, os, socket, subprocess, sys, time, re
gw_bin, worker_bin, config, label = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
N = int(os.environ.get("STREAMS", "4")); TOKENS = int(os.environ.get("TOKENS", "40000")); SIZE = 500
nats_port, gw_port = 14555, 18555
import tempfile
d = tempfile.mkdtemp(prefix="wf-slow-readers-" + label + "-")
open(d + "/cfg.json", "w").write(config)
procs = []
def start(args, log):
    p = subprocess.Popen(args, stdout=open(d + "/" + log, "w"), stderr=subprocess.STDOUT); procs.append(p); return p
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
def metric(name):
    s = socket.create_connection(("127.0.0.1", gw_port)); s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b: break
        data += b
    m = re.search(("\n" + re.escape(name) + r" (\S+)").encode(), data)
    return m.group(1).decode() if m else "-"
def tcmalloc(pid):
    out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
        "-ex", "set $v = (unsigned long*)malloc(8)",
        "-ex", 'call (int)MallocExtension_GetNumericProperty("generic.current_allocated_bytes", $v)',
        "-ex", "print *$v",
        "-ex", 'call (int)MallocExtension_GetNumericProperty("tcmalloc.pageheap_free_bytes", $v)',
        "-ex", "print *$v",
        "-ex", "call (void)MallocExtension_ReleaseFreeMemory()"], capture_output=True, text=True).stdout
    vals = re.findall(r"^\$\d+ = (\d+)", out, re.M)
    return [int(vals[i]) / (1024 * 1024) for i in (1, 3)] if len(vals) >= 4 else out[-500:]
try:
    start(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port)], "nats.log"); time.sleep(0.5)
    start([worker_bin, f"nats://127.0.0.1:{nats_port}"], "worker.log")
    gw = start([gw_bin, "--config", d + "/cfg.json", "--nats-url", f"nats://127.0.0.1:{nats_port}",
                "--listen", f"127.0.0.1:{gw_port}", "--threads", "2", "--log-level", "info"], "gw.log")
    time.sleep(2)
    print(label, "start: RSS", rss(gw.pid), "MB")
    body = json.dumps({"message": f"bigflood:{TOKENS}:{SIZE}", "session_id": "s"})
    req = (f"POST /api/v1/query/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    socks = []
    for i in range(N):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw_port)); s.sendall(req); socks.append(s)
    peak = 0
    for _ in range(40):
        time.sleep(0.5); peak = max(peak, rss(gw.pid))
    print(label, f"{N} streams of {TOKENS}x{SIZE} B not read, after 20 s: RSS", rss(gw.pid), "MB (peak", peak, "MB), queued_write_bytes",
          metric("wf_gateway_queued_write_bytes"), "dropped", metric("wf_gateway_slow_clients_dropped_total"),
          "cancels", metric("wf_gateway_cancels_total"))
    for s in socks: s.close()
    time.sleep(3)
    print(label, "3 s after the clients closed: RSS", rss(gw.pid), "MB, queued_write_bytes", metric("wf_gateway_queued_write_bytes"),
          "cancels", metric("wf_gateway_cancels_total"))
    t = tcmalloc(gw.pid)
    print(label, "tcmalloc: allocated MB, page-heap free MB =", t)
    print(label, "command:", " ".join(sys.argv))
    time.sleep(0.5)
    print(label, "after MallocExtension_ReleaseFreeMemory(): RSS", rss(gw.pid), "MB")
finally:
    for p in reversed(procs):
        p.terminate()
        try: p.wait(5)
        except Exception: p.kill()
