#!/usr/bin/python3
"""deploy_static_test: the deployment files checked without Docker or a cluster.

What runs (each line of output is one check: "ok", "FAIL" or "SKIP" with the reason):
  files      every k8s/*.yaml, docker-compose*.yml parses; k8s/workflow_config.json is JSON and,
             when wf-lightweight is built, passes its --check-config.
  compose    `docker-compose config -q` on docker-compose.yml, and with docker-compose.prod.yml
             (which must refuse to render without its required secrets); then cross-references
             on the files themselves: each wf service's env vars and flags are ones its binary's
             --help lists, health checks probe the port the binary listens on, health-conditioned
             dependencies have health checks, bind sources exist, config is mounted read-only,
             demo services sit in the demo profile, every ${VAR} is documented in .env.example,
             .env.example holds no real key.
  k8s        `kubectl kustomize k8s/` renders (with secrets.env from its template); `kubectl apply
             --dry-run=client --validate=false` accepts the output (against discovery_stub.py,
             since kubectl needs discovery even for a client dry run) and rejects a broken copy;
             then cross-references on the rendered objects: selectors match pod labels, Services
             and probes point at declared container ports, probe paths are served by the binary,
             env vars are read by the binary (--help), every ConfigMap/Secret (and key) referenced
             exists, autoscalers and PDBs target existing workloads, grace periods cover a turn,
             every container has requests and limits.
  image      scripts/check_runtime_deps.sh against the build dir (runtime packages == ldd of the
             binaries; build packages cover what CMake found), plus a broken Dockerfile copy that
             it must reject.

Environment: WF_SOURCE_DIR (repo root), WF_BIN_DIR (built binaries), as CTest sets them.
Tools: python3-yaml (required); docker-compose and kubectl are used when present, and their checks
are reported as SKIP otherwise (WF_DEPLOY_REQUIRE_TOOLS=1 turns a missing tool into a failure).
Exit status 0 when no check failed.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

SRC = os.path.abspath(os.environ.get("WF_SOURCE_DIR") or
                      os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.path.abspath(os.environ.get("WF_BIN_DIR") or os.path.join(SRC, "build", "bin"))
REQUIRE_TOOLS = os.environ.get("WF_DEPLOY_REQUIRE_TOOLS") == "1"
HERE = os.path.dirname(os.path.abspath(__file__))

WF_BINARIES = ["wf-gateway", "wf-lightweight", "wf-heavy", "wf-demo-api", "wf-scripted-llm"]
IMAGE_DEFAULT_CMD = "wf-gateway"  # the Dockerfile's CMD
K8S_IMAGE = "wf-pipeline"         # the image name k8s manifests use (kustomize `images` sets tag)

# HTTP paths each binary serves, from the wire contract: the gateway's API (ARCHITECTURE.md) and
# the workers' admin port (common/admin_http/admin_server.h). Checked live where possible.
ADMIN_PATHS = {"/health", "/ready", "/metrics"}
SERVED_PATHS = {
    "wf-gateway": {"/health", "/ready", "/metrics"},
    "wf-lightweight": ADMIN_PATHS,
    "wf-heavy": ADMIN_PATHS,
    "wf-demo-api": {"/health"},
    "wf-scripted-llm": {"/health"},
}
# Which flag/env names the port a binary listens on (the port probes must hit).
LISTEN_SETTING = {
    "wf-gateway": ("--listen", "WF_LISTEN", 8000),
    "wf-lightweight": ("--admin-listen", "WF_ADMIN_LISTEN", None),
    "wf-heavy": ("--admin-listen", "WF_ADMIN_LISTEN", None),
    "wf-demo-api": ("--listen", None, None),
    "wf-scripted-llm": ("--listen", None, None),
}


class Report:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok:   {what}")

    def fail(self, what):
        self.failed += 1
        print(f"FAIL: {what}")

    def check(self, cond, what, why=""):
        if cond:
            self.ok(what)
        else:
            self.fail(what + (f": {why}" if why else ""))
        return cond

    def skip(self, what, why):
        if REQUIRE_TOOLS:
            self.fail(f"{what}: {why} (WF_DEPLOY_REQUIRE_TOOLS=1)")
        else:
            self.skipped += 1
            print(f"SKIP: {what}: {why}")


R = Report()


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def src(*parts):
    return os.path.join(SRC, *parts)


# ---------------------------------------------------------------------------------------------
# What each binary accepts, from its --help.

class BinaryInfo:
    def __init__(self, name):
        self.name = name
        self.path = os.path.join(BIN, name)
        self.help = None
        self.envs = set()
        self.flags = set()
        if os.access(self.path, os.X_OK):
            try:
                out = run([self.path, "--help"], timeout=20)
                text = out.stdout + out.stderr
                if out.returncode == 0 and text.strip():
                    self.help = text
                    self.envs = set(re.findall(r"\(env ([A-Z][A-Z0-9_]*)\)", text))
                    if not self.envs:  # a --help of another shape: every CONSTANT_NAME
                        self.envs = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text))
                    self.flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
            except (subprocess.TimeoutExpired, OSError):
                pass


def help_default(info, env_name):
    """The default --help states for the flag whose env var is env_name (None if none)."""
    if info.help is None:
        return None
    m = re.search(r"\(env " + re.escape(env_name) + r"\)\s*\[default: ([^\]]*)\]", info.help)
    return m.group(1) if m else None


_binaries = {}


def binary(name):
    if name not in _binaries:
        _binaries[name] = BinaryInfo(name)
    return _binaries[name]


def check_binaries_built():
    for name in WF_BINARIES:
        info = binary(name)
        R.check(info.help is not None, f"{name} is built and answers --help",
                f"{info.path} missing or --help failed")


def binary_of_command(command):
    """The wf-* binary a container command runs (directly, or `exec`ed by bash -c)."""
    if not command:
        return IMAGE_DEFAULT_CMD, []
    if isinstance(command, str):
        command = command.split()
    if command[0] in WF_BINARIES:
        return command[0], list(command[1:])
    if command[0] in ("bash", "sh") and len(command) >= 3 and command[1] == "-c":
        m = re.search(r"exec (wf-[a-z-]+)((?: [^&;|]*)?)", command[2])
        if m:
            return m.group(1), m.group(2).split()
    return None, []


def check_env_and_flags(where, bin_name, env_names, args):
    info = binary(bin_name)
    if info.help is None:
        R.fail(f"{where}: cannot compare with {bin_name} --help (binary not built)")
        return
    unknown = sorted(set(env_names) - info.envs)
    R.check(not unknown, f"{where}: every env var is one {bin_name} reads ({', '.join(sorted(env_names)) or 'none'})",
            f"{bin_name} --help lists no {unknown}")
    flags = sorted({a.split("=", 1)[0] for a in args if a.startswith("--")})
    unknown = [f for f in flags if f not in info.flags]
    R.check(not unknown, f"{where}: every flag is one {bin_name} takes ({', '.join(flags) or 'none'})",
            f"{bin_name} --help lists no {unknown}")


def listen_port(bin_name, env, args):
    """The TCP port the binary will listen on, given its env and args (None if unknown/off)."""
    flag, env_name, default = LISTEN_SETTING[bin_name]
    value = None
    if flag in args:
        i = args.index(flag)
        value = args[i + 1] if i + 1 < len(args) else None
    for a in args:
        if a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    if value is None and env_name:
        value = env.get(env_name)
    if value is None:
        return default
    m = re.search(r":(\d+)$", str(value))
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Files parse.

def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_files_parse():
    for name in sorted(os.listdir(src("k8s"))):
        path = src("k8s", name)
        if name.endswith((".yaml", ".yml")):
            try:
                docs = load_yaml_all(path)
                bad = [d for d in docs if name != "kustomization.yaml" and
                       not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and
                            (d.get("metadata") or {}).get("name"))]
                R.check(docs and not bad, f"k8s/{name} parses ({len(docs)} objects)",
                        "an object lacks apiVersion, kind or metadata.name")
            except yaml.YAMLError as e:
                R.fail(f"k8s/{name} parses: {e}")
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        try:
            R.check(isinstance(load_yaml_all(src(name))[0], dict), f"{name} parses")
        except (yaml.YAMLError, IndexError, OSError) as e:
            R.fail(f"{name} parses: {e}")
    try:
        with open(src("k8s", "workflow_config.json")) as f:
            json.load(f)
        R.ok("k8s/workflow_config.json is JSON")
    except (ValueError, OSError) as e:
        R.fail(f"k8s/workflow_config.json is JSON: {e}")
    lw = binary("wf-lightweight")
    if lw.help is not None and "--check-config" in lw.flags:
        for cfg in ("k8s/workflow_config.json", "config/workflow_config.json"):
            out = run([lw.path, "--check-config", "--config", src(cfg)], timeout=30)
            R.check(out.returncode == 0, f"{cfg} passes wf-lightweight --check-config",
                    (out.stdout + out.stderr).strip()[:400])
    else:
        R.fail("config validation: wf-lightweight --check-config is not available")


# ---------------------------------------------------------------------------------------------
# docker-compose.

def compose_tool():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return None


PROD_ENV = {"POSTGRES_PASSWORD": "pw-for-test", "LLM_BASE_URL": "https://llm.example/v1",
            "LLM_API_KEY": "key-for-test", "LLM_MODEL": "model-for-test"}


def compose_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(extra or {})
    return env


def check_compose_tool():
    tool = compose_tool()
    if tool is None:
        R.skip("docker-compose config", "neither docker-compose nor `docker compose` is installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        empty_env = os.path.join(tmp, "empty.env")
        open(empty_env, "w").close()
        base = tool + ["--project-directory", SRC, "--env-file", empty_env,
                       "-f", src("docker-compose.yml")]
        prod = base + ["-f", src("docker-compose.prod.yml")]
        out = run(base + ["config", "-q"], env=compose_env())
        R.check(out.returncode == 0, "docker-compose -f docker-compose.yml config -q", out.stderr.strip())
        out = run(base + ["--profile", "demo", "config", "-q"], env=compose_env())
        R.check(out.returncode == 0, "docker-compose --profile demo config -q", out.stderr.strip())
        out = run(prod + ["config", "-q"], env=compose_env(PROD_ENV))
        R.check(out.returncode == 0, "docker-compose with the prod overlay config -q (secrets set)",
                out.stderr.strip())
        out = run(prod + ["config", "-q"], env=compose_env())
        R.check(out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr + out.stdout,
                "the prod overlay refuses to render without its required secrets",
                "rendered without POSTGRES_PASSWORD/LLM_*")
        out = run(prod + ["config"], env=compose_env(PROD_ENV))
        if out.returncode == 0:
            merged = yaml.safe_load(out.stdout)
            check_prod_merged(merged)


def check_prod_merged(merged):
    services = merged.get("services", {})
    for name, svc in sorted(services.items()):
        if "demo" in (svc.get("profiles") or []):
            continue
        limits = (((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {})
        R.check("memory" in limits and "cpus" in limits, f"prod: {name} has cpu and memory limits")
    heavy_env = (services.get("heavy") or {}).get("environment") or {}
    R.check("scripted-llm" not in str(heavy_env.get("LLM_BASE_URL", "")),
            "prod: heavy talks to the LLM from LLM_BASE_URL, not the demo's scripted LLM")
    R.check((services.get("lightweight") or {}).get("deploy", {}).get("replicas") == 5 and
            (services.get("heavy") or {}).get("deploy", {}).get("replicas") == 2,
            "prod: lightweight x5 and heavy x2 as in the original design")


def compose_env_dict(environment):
    if isinstance(environment, dict):
        return {k: ("" if v is None else str(v)) for k, v in environment.items()}
    env = {}
    for item in environment or []:
        k, _, v = str(item).partition("=")
        env[k] = v
    return env


def healthcheck_port(svc):
    test = (svc.get("healthcheck") or {}).get("test")
    text = " ".join(test) if isinstance(test, list) else str(test or "")
    m = re.search(r"/dev/tcp/127\.0\.0\.1/(\d+)", text) or re.search(r"127\.0\.0\.1:(\d+)", text)
    return int(m.group(1)) if m else None, text


def check_compose_files():
    base = load_yaml_all(src("docker-compose.yml"))[0]
    prod = load_yaml_all(src("docker-compose.prod.yml"))[0]
    services = base.get("services", {})
    R.check(set(services) >= {"nats", "redis", "postgres", "gateway", "lightweight", "heavy",
                              "demo-api", "scripted-llm"},
            "compose: nats, redis, postgres, gateway, lightweight, heavy, demo-api, scripted-llm")
    R.check(not set(prod.get("services", {})) - set(services),
            "compose prod overlay only overrides services of the base file")
    demo = {n for n, s in services.items() if "demo" in (s.get("profiles") or [])}
    R.check(demo == {"demo-api", "scripted-llm"}, "compose: demo-api and scripted-llm (only) are in profile demo",
            f"demo profile holds {sorted(demo)}")
    for name in demo:
        R.check(not (prod.get("services", {}).get(name) or {}).get("profiles"),
                f"compose prod overlay does not pull {name} out of the demo profile")

    for name, svc in sorted(services.items()):
        deps = svc.get("depends_on") or {}
        if isinstance(deps, dict):
            for dep, cond in deps.items():
                R.check(dep in services, f"compose: {name} depends on existing service {dep}")
                if (cond or {}).get("condition") == "service_healthy":
                    R.check(bool((services.get(dep) or {}).get("healthcheck")),
                            f"compose: {name} waits for {dep} healthy, and {dep} has a healthcheck")
                R.check(dep not in demo or name in demo,
                        f"compose: {name} does not depend on demo-only service {dep}")
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict) and vol.get("type") == "bind":
                source = os.path.normpath(os.path.join(SRC, vol["source"]))
                R.check(os.path.exists(source), f"compose: {name} bind source {vol['source']} exists")
                if vol.get("target", "").startswith("/etc/wf"):
                    R.check(vol.get("read_only") is True, f"compose: {name} mounts {vol['target']} read-only")

        image = svc.get("image", "")
        if "WF_IMAGE" not in image and "wf-pipeline" not in image:
            continue
        # A wf service: env vars, flags and health check against the binary.
        bin_name, args = binary_of_command(svc.get("command"))
        if not R.check(bin_name in WF_BINARIES, f"compose: {name} runs a wf binary ({bin_name})"):
            continue
        env = compose_env_dict(svc.get("environment"))
        prod_env = compose_env_dict(((prod.get("services") or {}).get(name) or {}).get("environment"))
        check_env_and_flags(f"compose {name}", bin_name, list(env) + list(prod_env), args)
        config_path = env.get("WF_CONFIG")
        if "--config" in args:
            config_path = args[args.index("--config") + 1]
        if bin_name in ("wf-gateway", "wf-lightweight", "wf-heavy"):
            R.check(bool(config_path) and config_path.startswith(("/etc/wf/", "/tmp/")),
                    f"compose: {name} reads its config from the mounted /etc/wf", f"config {config_path}")
        port = listen_port(bin_name, env, args)
        hc_port, hc_text = healthcheck_port(svc)
        R.check(port is not None and hc_port == port,
                f"compose: {name} healthcheck probes the port {bin_name} listens on ({port})",
                f"healthcheck probes {hc_port}")
        m = re.search(r"GET (/\S*)", hc_text)
        R.check(bool(m) and m.group(1) in SERVED_PATHS[bin_name],
                f"compose: {name} healthcheck path {m.group(1) if m else None} is served by {bin_name}")
        if bin_name in ("wf-gateway", "wf-heavy"):
            grace = str(svc.get("stop_grace_period", "10s"))
            secs = int(re.sub(r"\D", "", grace) or 0) * (60 if grace.endswith("m") else 1)
            R.check(secs >= turn_timeout_s(), f"compose: {name} stop_grace_period {grace} covers an agent turn "
                    f"({turn_timeout_s()} s)")
        if bin_name in ("wf-gateway", "wf-heavy"):
            drain = env.get("WF_DRAIN_MS") or help_default(binary(bin_name), "WF_DRAIN_MS")
            if R.check(drain is not None and str(drain).isdigit(), f"compose: {name} drain time is known ({drain} ms)"):
                d = (int(drain) + 999) // 1000
                R.check(d >= turn_timeout_s() and secs > d,
                        f"compose: {name} drains for an agent turn ({d} s) within stop_grace_period ({secs} s)")

    lw = services.get("lightweight", {})
    R.check((lw.get("deploy") or {}).get("replicas") == 2, "compose: lightweight runs 2 replicas")
    check_compose_config_rewrite(lw)
    gw_ports = [str(p) for p in services.get("gateway", {}).get("ports", [])]
    R.check(any(p.endswith(":8000") for p in gw_ports), "compose: gateway published on :8000")
    nats_cmd = services["nats"].get("command") or []
    R.check("-js" in nats_cmd and "-sd" in nats_cmd and services["nats"].get("volumes"),
            "compose: nats runs JetStream with its store on a volume")
    redis_cmd = services["redis"].get("command") or []
    R.check("--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
            and services["redis"].get("volumes"), "compose: redis has AOF on and a volume")
    R.check(bool(services["postgres"].get("volumes")) and bool(services["postgres"].get("healthcheck")),
            "compose: postgres has a volume and a healthcheck")
    heavy_env = compose_env_dict(services["heavy"].get("environment"))
    for key in ("LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL"):
        R.check(heavy_env.get(key, "").startswith("${" + key),
                f"compose: heavy takes {key} from the environment/.env")

    # Every ${VAR} the compose files use is documented in .env.example; no real key there.
    with open(src(".env.example")) as f:
        example = f.read()
    text = open(src("docker-compose.yml")).read() + open(src("docker-compose.prod.yml")).read()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.M))
    R.check(used <= documented, f".env.example documents every variable the compose files use ({len(used)})",
            f"undocumented: {sorted(used - documented)}")
    R.check(not re.search(r"sk-(?!REPLACE)[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}", example),
            ".env.example holds no real-looking key")
    tracked = run(["git", "-C", SRC, "ls-files", "--", ".env", "k8s/secrets.env"]).stdout.split()
    R.check(not tracked, "no .env or k8s/secrets.env is committed", f"tracked: {tracked}")


def check_compose_config_rewrite(svc):
    """lightweight's command rewrites the demo API address in a copy of the config: run that
    rewrite on the repository's config and check the result points at demo-api and still loads."""
    command = svc.get("command")
    if not (isinstance(command, list) and command[:2] == ["bash", "-c"]):
        return
    prepare = command[2].split("&& exec")[0]
    with tempfile.TemporaryDirectory() as tmp:
        # /tmp/ first: the checkout itself may live under /tmp (CI clones do).
        script = prepare.replace("/tmp/", tmp + "/").replace("/etc/wf/", src("config") + "/")
        out = run(["bash", "-c", script], timeout=30)
        path = os.path.join(tmp, "workflow_config.json")
        if not R.check(out.returncode == 0 and os.path.exists(path),
                       "compose: lightweight's config rewrite runs", out.stderr.strip()):
            return
        text = open(path).read()
        R.check("127.0.0.1:8081" not in text and ("demo-api:8081" in text or
                                                   "8081" not in open(src("config", "workflow_config.json")).read()),
                "compose: lightweight's config copy calls the demo API at demo-api:8081")
        lw = binary("wf-lightweight")
        if lw.help is not None:
            out = run([lw.path, "--check-config", "--config", path], timeout=30)
            R.check(out.returncode == 0, "compose: lightweight's rewritten config passes --check-config",
                    (out.stdout + out.stderr).strip()[:300])


_turn_timeout = None


def turn_timeout_s():
    global _turn_timeout
    if _turn_timeout is None:
        try:
            with open(src("k8s", "workflow_config.json")) as f:
                ms = (json.load(f).get("agent") or {}).get("turn_timeout_ms", 120000)
        except (OSError, ValueError):
            ms = 120000
        _turn_timeout = (ms + 999) // 1000
    return _turn_timeout


def heavy_stream_name():
    """The agent stream the heavy pool of k8s/ uses: JetStreamName(subject_prefix, "HEAVY")."""
    try:
        with open(src("k8s", "workflow_config.json")) as f:
            prefix = json.load(f).get("subject_prefix", "wf")
    except (OSError, ValueError):
        prefix = "wf"
    return re.sub(r"[^A-Z0-9_-]", "_", prefix.upper()) + "_HEAVY"


# ---------------------------------------------------------------------------------------------
# Kubernetes.

def k8s_copy_with_template_secrets(tmp):
    """k8s/ copied to tmp, with secrets.env made from the template (never a real secrets.env)."""
    dst = os.path.join(tmp, "k8s")
    shutil.copytree(src("k8s"), dst, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(os.path.join(dst, "secrets.env.example"), os.path.join(dst, "secrets.env"))
    return dst


def read_env_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


CLUSTER_SCOPED = {"Namespace"}


def mini_kustomize(kdir):
    """Renders the subset of kustomize that k8s/kustomization.yaml uses (no hash suffixes)."""
    with open(os.path.join(kdir, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    objs = []
    for res in kust.get("resources", []):
        objs += load_yaml_all(os.path.join(kdir, res))
    for gen in kust.get("configMapGenerator", []):
        data = {}
        for fname in gen.get("files", []):
            key, _, path = fname.partition("=")
            with open(os.path.join(kdir, path or key)) as f:
                data[key] = f.read()
        for env in gen.get("envs", []):
            data.update(read_env_file(os.path.join(kdir, env)))
        data.update(dict(lit.split("=", 1) for lit in gen.get("literals", [])))
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for gen in kust.get("secretGenerator", []):
        data = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(os.path.join(kdir, env)))
        objs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": gen["name"]}, "stringData": data})
    images = {i["name"]: i for i in kust.get("images", [])}
    for o in objs:
        if kust.get("namespace") and o["kind"] not in CLUSTER_SCOPED:
            o["metadata"]["namespace"] = kust["namespace"]
        for c in pod_containers(o):
            name = c.get("image", "")
            if name in images:
                i = images[name]
                c["image"] = f"{i.get('newName', name)}:{i['newTag']}" if "newTag" in i else i.get("newName", name)
    return objs


def pod_spec(obj):
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def pod_labels(obj):
    return (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def pod_containers(obj):
    spec = pod_spec(obj)
    if spec is None:
        return []
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def selector_matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def render_k8s():
    with tempfile.TemporaryDirectory() as tmp:
        kdir = k8s_copy_with_template_secrets(tmp)
        if shutil.which("kubectl"):
            out = run(["kubectl", "kustomize", kdir])
            if R.check(out.returncode == 0, "kubectl kustomize k8s/ renders", out.stderr.strip()[:500]):
                objs = [d for d in yaml.safe_load_all(out.stdout) if d]
                return objs, out.stdout, True
            return None, None, False
        R.skip("kubectl kustomize k8s/", "kubectl is not installed; rendering the same subset of "
               "kustomize in Python for the cross-reference checks")
        objs = mini_kustomize(kdir)
        return objs, yaml.safe_dump_all(objs), False


def check_kubectl_apply(rendered):
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        stub = subprocess.Popen([sys.executable, os.path.join(HERE, "discovery_stub.py"), port_file],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (os.path.exists(port_file) and
                                                        open(port_file).read().strip()):
                time.sleep(0.05)
            port = open(port_file).read().strip()
            kubeconfig = os.path.join(tmp, "kubeconfig")  # no user config is read or written
            base = ["kubectl", "--kubeconfig", kubeconfig, "--server", f"http://127.0.0.1:{port}",
                    "apply", "--dry-run=client", "--validate=false", "-f", "-"]
            open(kubeconfig, "w").write("apiVersion: v1\nkind: Config\n")
            out = run(base, input=rendered)
            created = len(re.findall(r"created \(dry run\)", out.stdout))
            objects = len([d for d in yaml.safe_load_all(rendered) if d])
            R.check(out.returncode == 0 and created == objects,
                    f"kubectl apply --dry-run=client --validate=false accepts all {objects} rendered objects",
                    (out.stderr or out.stdout).strip()[:500])
            # With --validate=false kubectl decodes each object's metadata and maps its kind to a
            # REST resource; it does not check spec fields against the schema (that needs the
            # server's OpenAPI). Show that it does reject what it claims to check.
            broken = rendered.replace("\n  namespace: wf\n", "\n  namespace: 42\n", 1)
            out = run(base, input=broken)
            R.check(out.returncode != 0, "kubectl apply --dry-run=client rejects a copy whose metadata "
                    "does not decode")
            unknown = rendered + "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: x}\n"
            out = run(base, input=unknown)
            R.check(out.returncode != 0, "kubectl apply --dry-run=client rejects a kind the cluster "
                    "does not serve")
        finally:
            stub.terminate()
            stub.wait(timeout=10)


def check_k8s_refs(objs):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    R.check(set(by_kind) >= {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment",
                             "HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget"},
            "k8s: namespace, configmaps, secret, services, statefulsets, deployments, HPA, "
            "ScaledObject, PDBs are all rendered", f"kinds: {sorted(by_kind)}")
    namespaces = set(by_kind.get("Namespace", {}))
    workloads = [o for o in objs if pod_spec(o) is not None]

    def find(kind, name_prefix):
        """A generated object by its base name (kustomize appends -<hash>)."""
        for name, o in by_kind.get(kind, {}).items():
            if name == name_prefix or re.fullmatch(re.escape(name_prefix) + r"-[a-z0-9]{10}", name):
                return o
        return None

    R.check("wf" in namespaces and
            all(o["metadata"].get("namespace") == "wf" for o in objs if o["kind"] not in CLUSTER_SCOPED),
            "k8s: every namespaced object is in namespace wf, which the kustomization creates")

    # Selectors and labels.
    for w in workloads:
        sel = ((w.get("spec") or {}).get("selector") or {}).get("matchLabels")
        R.check(selector_matches(sel, pod_labels(w)),
                f"k8s: {w['kind']}/{w['metadata']['name']} selector matches its pod labels")

    # Services -> pods and ports.
    for name, svc in sorted(by_kind.get("Service", {}).items()):
        sel = (svc.get("spec") or {}).get("selector")
        targets = [w for w in workloads if selector_matches(sel, pod_labels(w))]
        if not R.check(bool(targets), f"k8s: Service/{name} selects pods of a workload"):
            continue
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort", p.get("port"))
            found = all(any(cp.get("name") == tp or cp.get("containerPort") == tp
                            for c in pod_containers(w) for cp in c.get("ports", []))
                        for w in targets)
            R.check(found, f"k8s: Service/{name} port {p.get('port')} -> {tp} is a declared container port")
    for name, sts in by_kind.get("StatefulSet", {}).items():
        svc_name = sts["spec"].get("serviceName")
        R.check(svc_name in by_kind.get("Service", {}),
                f"k8s: StatefulSet/{name} serviceName {svc_name} exists")
        R.check(bool(sts["spec"].get("volumeClaimTemplates")), f"k8s: StatefulSet/{name} keeps its data on a PVC")

    # Autoscalers and PDBs target real workloads.
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for name, a in by_kind.get(kind, {}).items():
            ref = a["spec"]["scaleTargetRef"]
            R.check(ref.get("name") in by_kind.get(ref.get("kind", "Deployment"), {}),
                    f"k8s: {kind}/{name} scales existing {ref.get('kind', 'Deployment')}/{ref.get('name')}")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        matched = [w for w in workloads if selector_matches(sel, pod_labels(w))]
        R.check(len(matched) == 1, f"k8s: PodDisruptionBudget/{name} selects the pods of one workload")
        for w in matched:
            replicas = w["spec"].get("replicas", 1)
            R.check(replicas >= 2, f"k8s: PodDisruptionBudget/{name} guards a workload of {replicas} replicas "
                    "(a PDB on one replica would block node drains)")

    # Containers: image, env, refs, probes, resources.
    for w in workloads:
        wname = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for v in volumes.values():
            if "configMap" in v:
                R.check(find("ConfigMap", v["configMap"]["name"]) is not None,
                        f"k8s: {wname} volume {v['name']} ConfigMap {v['configMap']['name']} exists")
            if "secret" in v:
                R.check(find("Secret", v["secret"]["secretName"]) is not None,
                        f"k8s: {wname} volume {v['name']} Secret {v['secret']['secretName']} exists")
        for c in pod_containers(w):
            where = f"{wname} container {c['name']}"
            for m in c.get("volumeMounts") or []:
                R.check(m["name"] in volumes or any(t["metadata"]["name"] == m["name"]
                                                    for t in w["spec"].get("volumeClaimTemplates") or []),
                        f"k8s: {where} mounts declared volume {m['name']}")
            env = {}
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                for ref_kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in vf:
                        ref = vf[key]
                        obj = find(ref_kind, ref["name"])
                        data = {} if obj is None else {**(obj.get("data") or {}), **(obj.get("stringData") or {})}
                        R.check(obj is not None and ref["key"] in data,
                                f"k8s: {where} env {e['name']} <- {ref_kind} {ref['name']} key {ref['key']} exists")
                        env[e["name"]] = (data.get(ref["key"]) if ref_kind == "ConfigMap" else "<secret>")
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                env.setdefault(e["name"], "")
            for ef in c.get("envFrom") or []:
                for ref_kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ef:
                        R.check(find(ref_kind, ef[key]["name"]) is not None,
                                f"k8s: {where} envFrom {ref_kind} {ef[key]['name']} exists")
            declared = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            probes = {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c}
            for kind_, probe in probes.items():
                hg = probe.get("httpGet")
                if hg:
                    port = hg["port"]
                    R.check(port in declared or port in declared.values(),
                            f"k8s: {where} {kind_} port {port} is a declared container port")
            res = c.get("resources") or {}
            R.check(all(k in (res.get(t) or {}) for t in ("requests", "limits") for k in ("cpu", "memory")),
                    f"k8s: {where} has cpu and memory requests and limits")

            image = c.get("image", "")
            if not image.startswith(K8S_IMAGE):
                continue
            # A wf container.
            bin_name, args = binary_of_command((c.get("command") or []) + (c.get("args") or []))
            if not R.check(bin_name in WF_BINARIES, f"k8s: {where} runs a wf binary ({bin_name})"):
                continue
            check_env_and_flags(f"k8s {where}", bin_name, list(env), args)
            port = listen_port(bin_name, env, args)
            R.check(port is not None and port in declared.values(),
                    f"k8s: {where} declares the port {bin_name} listens on ({port})",
                    f"declared {declared}")
            for kind_ in ("livenessProbe", "readinessProbe"):
                hg = (probes.get(kind_) or {}).get("httpGet")
                if not R.check(bool(hg), f"k8s: {where} has an HTTP {kind_}"):
                    continue
                pport = declared.get(hg["port"], hg["port"])
                R.check(pport == port and hg.get("path") in SERVED_PATHS[bin_name],
                        f"k8s: {where} {kind_} GET {hg.get('path')} on {pport} is served by {bin_name}")
            R.check((probes.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/health" and
                    (probes.get("readinessProbe") or {}).get("httpGet", {}).get("path") == "/ready",
                    f"k8s: {where} liveness is /health and readiness /ready")
            sc = c.get("securityContext") or {}
            psc = spec.get("securityContext") or {}
            R.check(psc.get("runAsNonRoot") is True and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("readOnlyRootFilesystem") is True,
                    f"k8s: {where} runs non-root, read-only, without privilege escalation")
            cfg_path = env.get("WF_CONFIG", "")
            mounted = any(cfg_path.startswith(m["mountPath"].rstrip("/") + "/") and
                          "configMap" in volumes.get(m["name"], {}) for m in c.get("volumeMounts") or [])
            R.check(mounted, f"k8s: {where} WF_CONFIG {cfg_path} lies in the mounted workflow ConfigMap")
            if bin_name in ("wf-gateway", "wf-heavy"):
                grace = spec.get("terminationGracePeriodSeconds", 30)
                R.check(grace >= turn_timeout_s(), f"k8s: {wname} terminationGracePeriodSeconds {grace} "
                        f"covers an agent turn ({turn_timeout_s()} s)")
            if bin_name in ("wf-gateway", "wf-heavy"):
                drain = env.get("WF_DRAIN_MS") or help_default(binary(bin_name), "WF_DRAIN_MS")
                pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
                pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" and pre[1].isdigit() else 0
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if R.check(drain is not None and str(drain).isdigit(), f"k8s: {where} drain time is known ({drain} ms)"):
                    d = (int(drain) + 999) // 1000
                    R.check(d >= turn_timeout_s() and grace >= pre_s + d,
                            f"k8s: {where} drains for an agent turn ({d} s >= {turn_timeout_s()} s) within "
                            f"its grace period ({pre_s} s preStop + {d} s <= {grace} s)")

    # The design's scaling.
    lw = by_kind.get("Deployment", {}).get("lightweight")
    R.check(lw is not None and lw["spec"].get("replicas") == 5, "k8s: lightweight runs 5 replicas")
    hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("lightweight")
    R.check(hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "lightweight" and
            any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])),
            "k8s: lightweight has an HPA on CPU")
    so = by_kind.get("ScaledObject", {}).get("heavy")
    if R.check(so is not None, "k8s: heavy has a KEDA ScaledObject"):
        s = so["spec"]
        triggers = {t["type"]: t for t in s.get("triggers", [])}
        R.check(s.get("minReplicaCount") == 2 and s.get("maxReplicaCount") == 10,
                "k8s: heavy ScaledObject min 2, max 10")
        R.check(triggers.get("cpu", {}).get("metadata", {}).get("value") == "70",
                "k8s: heavy ScaledObject CPU trigger at 70%")
        js = triggers.get("nats-jetstream", {}).get("metadata", {})
        stream = heavy_stream_name()
        R.check(js.get("stream") == stream and js.get("consumer") == "heavy",
                f"k8s: heavy ScaledObject nats-jetstream trigger on stream {stream} (subject_prefix of "
                "k8s/workflow_config.json) consumer heavy",
                f"stream {js.get('stream')!r}, consumer {js.get('consumer')!r}")
        # KEDA's lag is num_pending + num_ack_pending (waiting + running turns), so the target per
        # replica must be at most a worker's concurrency (else a full pool asks for no more) and
        # not far below it (else idle workers are multiplied).
        heavy = by_kind.get("Deployment", {}).get("heavy")
        henv = {}
        for c in (pod_containers(heavy) if heavy else []):
            henv.update({e["name"]: str(e.get("value", "")) for e in c.get("env") or [] if "value" in e})
        concurrency = henv.get("WF_CONCURRENCY") or help_default(binary("wf-heavy"), "WF_CONCURRENCY")
        lag = str(js.get("lagThreshold", ""))
        if R.check(lag.isdigit() and str(concurrency).isdigit(),
                   f"k8s: heavy lagThreshold ({lag}) and WF_CONCURRENCY ({concurrency}) are known"):
            R.check(int(concurrency) / 2 <= int(lag) <= int(concurrency),
                    f"k8s: heavy lagThreshold {lag} (waiting + running turns per replica) is between half "
                    f"and all of WF_CONCURRENCY {concurrency}")
        host, _, port = js.get("natsServerMonitoringEndpoint", "").partition(":")
        parts = host.split(".")
        svc = by_kind.get("Service", {}).get(parts[0])
        R.check(svc is not None and len(parts) >= 2 and parts[1] == svc["metadata"].get("namespace") and
                any(str(p["port"]) == port for p in svc["spec"]["ports"]),
                f"k8s: KEDA reads NATS monitoring at {host}:{port}, a port of an existing Service")

    # The secret template covers every key the manifests read, and nothing real is in it.
    template = read_env_file(src("k8s", "secrets.env.example"))
    secret_keys = set()
    for w in workloads:
        for c in pod_containers(w):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret_keys.add(ref["key"])
    R.check(secret_keys == set(template), "k8s: secrets.env.example has exactly the keys the pods read",
            f"read {sorted(secret_keys)}, template {sorted(template)}")
    R.check(all("REPLACE" in v for v in template.values()), "k8s: secrets.env.example holds placeholders only")
    pw = template.get("POSTGRES_PASSWORD", "")
    R.check(f":{pw}@" in template.get("DATABASE_URL", ""),
            "k8s: the template's DATABASE_URL carries the POSTGRES_PASSWORD placeholder")
    ignore = open(src("k8s", ".gitignore")).read().split() if os.path.exists(src("k8s", ".gitignore")) else []
    R.check("secrets.env" in ignore, "k8s: secrets.env is git-ignored")
    with open(src("k8s", "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    listed = set(kust.get("resources", []))
    on_disk = {n for n in os.listdir(src("k8s")) if n.endswith(".yaml") and n != "kustomization.yaml"}
    R.check(listed == on_disk, "k8s: kustomization lists every manifest in k8s/ and no other",
            f"unlisted {sorted(on_disk - listed)}, missing {sorted(listed - on_disk)}")


# ---------------------------------------------------------------------------------------------
# Live probes: the paths the manifests probe, asked of the real binaries.

def http_status(port, path, timeout=2.0):
    import http.client
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def free_ports(n):
    """n distinct free local ports, bound all at once (closing each before asking for the next
    lets the kernel hand out the same port twice)."""
    import socket
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def check_live_probes():
    """Starts nats-server, wf-gateway and wf-lightweight (the binaries whose dependencies are one
    NATS server) and asks each for every probe path it is expected to serve."""
    nats = shutil.which("nats-server")
    gw, lw = binary("wf-gateway"), binary("wf-lightweight")
    if not nats or gw.help is None or lw.help is None:
        R.skip("live probe paths", "needs nats-server, wf-gateway and wf-lightweight")
        return
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            nport, gport, aport = free_ports(3)
            procs.append(subprocess.Popen([nats, "-a", "127.0.0.1", "-p", str(nport), "-js", "-sd", tmp],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            import socket

            def nats_up():
                try:
                    socket.create_connection(("127.0.0.1", nport), timeout=0.5).close()
                    return True
                except OSError:
                    return False
            if not R.check(wait_for(nats_up), "live: nats-server started"):
                return
            env = dict(os.environ, NATS_URL=f"nats://127.0.0.1:{nport}", WF_CONFIG=src("config", "workflow_config.json"))
            for name, extra in (("wf-gateway", {"WF_LISTEN": f"127.0.0.1:{gport}"}),
                                ("wf-lightweight", {"WF_ADMIN_LISTEN": f"127.0.0.1:{aport}"})):
                log = open(os.path.join(tmp, name + ".log"), "w")
                procs.append(subprocess.Popen([os.path.join(BIN, name)], env={**env, **extra},
                                              stdout=log, stderr=log))
            for name, port in (("wf-gateway", gport), ("wf-lightweight", aport)):
                up = wait_for(lambda: http_status(port, "/health") == 200)
                if not R.check(up, f"live: {name} answers GET /health 200"):
                    continue
                for path in sorted(SERVED_PATHS[name]):
                    st = http_status(port, path)
                    R.check(st in (200, 503), f"live: {name} serves {path} ({st})")
                R.check(http_status(port, "/no-such-probe") == 404,
                        f"live: {name} answers 404 to a path it does not serve (so the above means something)")
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
            for p in reversed(procs):
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---------------------------------------------------------------------------------------------
# Health checks, run for real: in a private network namespace (so the real ports 8000, 9090,
# 8081, 8090 are free and nothing else answers there) each wf service's binary starts as its
# compose service would, and the Dockerfile's HEALTHCHECK and the service's compose healthcheck
# must pass while it runs and fail once it is gone.

def interpolate(value):
    """docker-compose's ${VAR:-default} with an empty environment."""
    return re.sub(r"\$\{[A-Z_][A-Z0-9_]*(?::?-([^}]*))?[^}]*\}", lambda m: m.group(1) or "", str(value))


def dockerfile_healthcheck():
    with open(src("Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    return json.loads(m.group(1)) if m else None


def healthcheck_cases():
    services = load_yaml_all(src("docker-compose.yml"))[0]["services"]
    cases = []
    for name, svc in services.items():
        if "WF_IMAGE" not in svc.get("image", "") and "wf-pipeline" not in svc.get("image", ""):
            continue  # nats, redis, postgres: their images bring their own checks
        bin_name, args = binary_of_command(svc.get("command"))
        if bin_name is None or bin_name == "wf-heavy":  # heavy needs Redis and PostgreSQL too
            continue
        env = {k: interpolate(v) for k, v in compose_env_dict(svc.get("environment")).items()}
        env["NATS_URL"] = "nats://127.0.0.1:4222"
        if "WF_CONFIG" in env or bin_name in ("wf-gateway", "wf-lightweight"):
            env["WF_CONFIG"] = src("config", "workflow_config.json")
        fixed = []
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a in ("--config", "--rules"):
                skip = True  # container paths; the defaults/env above stand in
                continue
            fixed.append(a)
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test and test[0] == "CMD":
            test = test[1:]
        port = listen_port(bin_name, env, args)
        cases.append((name, bin_name, fixed, env, test, port))
    return cases


def port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def netns_healthchecks():
    """Runs inside `unshare -n`: prints ok/FAIL lines like the rest."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hc = dockerfile_healthcheck()
    if not R.check(hc is not None, "netns: the Dockerfile HEALTHCHECK is an exec-form CMD"):
        return
    out = run(hc, timeout=30)
    R.check(out.returncode != 0, "netns: the Dockerfile HEALTHCHECK fails when nothing serves /health")
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(subprocess.Popen([shutil.which("nats-server"), "-a", "127.0.0.1", "-p", "4222",
                                           "-js", "-sd", tmp], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            if not R.check(wait_for(lambda: port_open(4222)), "netns: nats-server started on 4222"):
                return
            for name, bin_name, args, env, test, port in healthcheck_cases():
                log_path = os.path.join(tmp, name + ".log")
                with open(log_path, "w") as log:
                    p = subprocess.Popen([os.path.join(BIN, bin_name)] + args,
                                         env={**os.environ, **env}, stdout=log, stderr=log)
                try:
                    up = wait_for(lambda: port_open(port) and http_status(port, "/health") == 200, 20)
                    if not R.check(up, f"netns: {name} ({bin_name}) serves /health on {port}",
                                   open(log_path).read()[-400:]):
                        continue
                    out = run(hc, timeout=30)
                    R.check(out.returncode == 0, f"netns: the Dockerfile HEALTHCHECK passes for {name}",
                            out.stderr.strip())
                    out = run(test, timeout=30)
                    R.check(out.returncode == 0, f"netns: the compose healthcheck of {name} passes",
                            out.stderr.strip())
                finally:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
                out = run(test, timeout=30)
                R.check(out.returncode != 0, f"netns: the compose healthcheck of {name} fails once it is gone")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)


def check_healthchecks_live():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        R.skip("health checks in a network namespace", "needs root, unshare and ip")
        return
    if not shutil.which("nats-server") or any(binary(b).help is None for b in
                                              ("wf-gateway", "wf-lightweight", "wf-demo-api",
                                               "wf-scripted-llm")):
        R.skip("health checks in a network namespace", "needs nats-server and the binaries")
        return
    out = run(["unshare", "-n", sys.executable, os.path.abspath(__file__), "--netns-healthchecks"],
              timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("ok:"):
            R.ok(line[4:].strip())
        elif line.startswith("FAIL:"):
            R.fail(line[5:].strip())
    R.check(out.returncode == 0 or "FAIL" in out.stdout, "netns: the namespace run completed",
            out.stderr.strip()[-500:])


# ---------------------------------------------------------------------------------------------
# The Dockerfile.

def check_image_configure():
    """The build stage's `cmake -S . -B build ...` configures this source tree (configure only:
    building all five binaries again would double the test's cost)."""
    with open(src("Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    m = re.search(r"cmake -S \. -B build((?: -D\S+)*)", text)
    if not R.check(bool(m), "the Dockerfile's build stage runs `cmake -S . -B build -D...`"):
        return
    flags = m.group(1).split()
    # The image must be built as the tests were: another build type compiles other code paths
    # (GCC 12 at -O3 once failed on a false -Wrestrict that -O2 never showed).
    image_type = next((f.split("=", 1)[1] for f in flags if f.startswith("-DCMAKE_BUILD_TYPE=")), "")
    cache = os.path.join(os.path.dirname(BIN), "CMakeCache.txt")
    tested_type = ""
    if os.path.exists(cache):
        for line in open(cache):
            if line.startswith("CMAKE_BUILD_TYPE:"):
                tested_type = line.split("=", 1)[1].strip()
    if tested_type == "Debug":
        R.skip("image build type", "this test run is a Debug build; CI's is RelWithDebInfo")
    elif tested_type:
        R.check(image_type == tested_type,
                f"the image is built as the tests were (CMAKE_BUILD_TYPE {image_type or 'unset'} "
                f"in the Dockerfile, {tested_type} in {cache})")
    else:
        R.skip("image build type", f"no CMAKE_BUILD_TYPE in {cache}")
    with tempfile.TemporaryDirectory() as tmp:
        out = run(["cmake", "-S", SRC, "-B", tmp] + flags, timeout=300)
        errors = [l for l in (out.stdout + out.stderr).splitlines() if "Error" in l][:3]
        R.check(out.returncode == 0, f"the build stage's CMake configure succeeds ({' '.join(flags)})",
                " | ".join(errors))


def check_image():
    check_image_configure()
    build_dir = os.path.dirname(BIN)
    script = src("scripts", "check_runtime_deps.sh")
    out = run(["bash", script, build_dir], timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("FAIL:"):
            print("      " + line)
    R.check(out.returncode == 0, "scripts/check_runtime_deps.sh: the Dockerfile's package lists, COPYs, "
            "user and healthcheck match the build", out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr)
    if out.returncode != 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        with open(src("Dockerfile")) as f:
            text = f.read()
        broken = os.path.join(tmp, "Dockerfile")
        open(broken, "w").write(re.sub(r"\n\s*libre2-9 \\", "", text, count=1))
        out = run(["bash", script, build_dir, broken], timeout=300)
        R.check(out.returncode != 0 and "lacks libre2-9" in out.stdout,
                "check_runtime_deps.sh rejects a Dockerfile whose runtime lacks a linked library")


def main():
    if sys.argv[1:] == ["--netns-healthchecks"]:
        netns_healthchecks()
        return 1 if R.failed else 0
    print(f"deploy checks: source {SRC}, binaries {BIN}")
    check_binaries_built()
    check_files_parse()
    check_compose_tool()
    check_compose_files()
    objs, rendered, by_kubectl = render_k8s()
    if objs is not None:
        if by_kubectl:
            check_kubectl_apply(rendered)
        else:
            R.skip("kubectl apply --dry-run=client", "kubectl is not installed")
        check_k8s_refs(objs)
    check_live_probes()
    check_healthchecks_live()
    check_image()
    print(f"deploy_static: {R.passed} passed, {R.failed} failed, {R.skipped} skipped")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
