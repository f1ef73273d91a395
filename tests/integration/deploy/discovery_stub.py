#!/usr/bin/python3
"""A Kubernetes API server that knows only discovery, for `kubectl apply --dry-run=client`.

kubectl, even with --dry-run=client --validate=false, asks a server which resources exist (to map
each kind to its REST path) and whether each object already exists (to choose create or patch).
This stub answers the first from a fixed table of the API groups our manifests use (core v1,
apps/v1, autoscaling/v2, policy/v1 and KEDA's keda.sh/v1alpha1, as installed by KEDA's CRDs),
and "404 not found" to everything else, so kubectl takes the create path and prints what it would
create. Nothing is stored; nothing but GET is accepted.

Usage: discovery_stub.py PORT_FILE   (binds 127.0.0.1:0, writes the port to PORT_FILE, serves
until killed). Standard library only.
"""
import http.server
import json
import sys

# group/version -> [(plural, kind, namespaced, short names)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False, ["ns"]),
        ("configmaps", "ConfigMap", True, ["cm"]),
        ("secrets", "Secret", True, []),
        ("services", "Service", True, ["svc"]),
        ("pods", "Pod", True, ["po"]),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"]),
        ("serviceaccounts", "ServiceAccount", True, ["sa"]),
    ],
    "apps/v1": [
        ("deployments", "Deployment", True, ["deploy"]),
        ("statefulsets", "StatefulSet", True, ["sts"]),
    ],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"])],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"])],
    "keda.sh/v1alpha1": [
        ("scaledobjects", "ScaledObject", True, ["so"]),
        ("triggerauthentications", "TriggerAuthentication", True, ["ta"]),
    ],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resource_list(group_version):
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": VERBS, "shortNames": short}
            for plural, kind, namespaced, short in RESOURCES[group_version]
        ],
    }


def group_list():
    groups = []
    for gv in RESOURCES:
        if "/" not in gv:
            continue
        group, version = gv.split("/")
        entry = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # quiet: kubectl's own output is what the test reads
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-stub"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "/api/v1":
            return self.reply(200, resource_list("v1"))
        if path == "/apis":
            return self.reply(200, group_list())
        if path.startswith("/apis/") and path[len("/apis/"):] in RESOURCES:
            return self.reply(200, resource_list(path[len("/apis/"):]))
        return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404,
                                "message": "not found (discovery stub)"})

    def refuse(self):
        self.reply(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "MethodNotAllowed", "code": 405,
                         "message": "the discovery stub stores nothing"})

    do_POST = do_PUT = do_PATCH = do_DELETE = refuse


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
