# spawn's tool runner: the command of a built-in agent loop's sandbox (spawn-run runs it
# as `python3 -c` with this text). It asks the run's gateway for the loop's next tool call,
# executes it here, inside the sandbox, as the agent, and posts the result back; it exits
# when the loop is done. The loop outside has already checked each call against the
# granted capabilities and the tool's schema; this side checks paths again against where
# they really lead (symbolic links), because only this side can see that.
import json
import os
import resource
import signal
import subprocess
import sys
import urllib.error
import urllib.request

BASE = os.environ["SPAWN_TOOLS_URL"]
KEY = os.environ["ANTHROPIC_API_KEY"]
CAP = 64 << 10  # bytes of each output stream, and of a fetched body, given back
READ_CAP = 256 << 10
INTERPRETERS = {
    "python": ["python3", "-c"],
    "bash": ["bash", "-c"],
    "sh": ["sh", "-c"],
    "node": ["node", "-e"],
}
# The loop's own connection to the gateway: never through a proxy.
GATEWAY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(path, obj):
    req = urllib.request.Request(
        BASE + path,
        data=json.dumps(obj).encode(),
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    with GATEWAY.open(req, timeout=60) as r:
        return json.loads(r.read())


def text(b, cap):
    cut = len(b) > cap
    return b[:cap].decode("utf-8", "replace") + ("\n[... cut at %d bytes]" % cap if cut else "")


def inside(path, roots):
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def run_exec(i, limits):
    argv = INTERPRETERS[i["language"]] + [i["code"]]

    def confine():
        mem = limits.get("memory")
        if mem:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    try:
        # A session of its own: a timeout ends the code and everything it started.
        p = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd="/workspace" if os.path.isdir("/workspace") else "/",
            preexec_fn=confine,
            start_new_session=True,
        )
    except OSError as e:
        return {"error": "could not run %s: %s" % (argv[0], e.strerror)}
    try:
        out, err = p.communicate(timeout=limits.get("timeout", 60))
        return {"exitCode": p.returncode, "stdout": text(out, CAP), "stderr": text(err, CAP)}
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            # Something left its own session holding the output open: given up on.
            out, err = b"", b""
        return {"error": "timed out after %ss" % limits.get("timeout"), "stdout": text(out, CAP),
                "stderr": text(err, CAP)}


def run_fetch(i):
    req = urllib.request.Request(i["url"], method=i.get("method", "GET"),
                                 data=i["body"].encode() if "body" in i else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return {"status": r.status, "contentType": r.headers.get("content-type"), "body": text(r.read(CAP + 1), CAP)}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "error": "HTTP %d" % e.code, "body": text(e.read(CAP + 1), CAP)}
    except Exception as e:  # refused by the proxy, no network, DNS...
        return {"error": "%s: %s" % (type(e).__name__, e)}


def run_fs(tool, i, roots):
    path = i["path"]
    want = roots["write"] if tool == "fs_write" else roots["read"]
    if not inside(path, want):
        return {"error": "%s is outside the workspace and the granted mounts" % path}
    try:
        if tool == "fs_read":
            with open(path, "rb") as f:
                return {"content": text(f.read(READ_CAP + 1), READ_CAP)}
        if tool == "fs_write":
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            data = i["content"].encode()
            with open(path, "wb") as f:
                f.write(data)
            return {"bytesWritten": len(data)}
        entries = []
        for e in sorted(os.scandir(path), key=lambda e: e.name)[:1000]:
            kind = "dir" if e.is_dir(follow_symlinks=False) else "link" if e.is_symlink() else "file"
            size = e.stat(follow_symlinks=False).st_size if kind == "file" else None
            entries.append({"name": e.name, "type": kind, "size": size})
        return {"entries": entries}
    except OSError as e:
        return {"error": "%s: %s" % (path, e.strerror)}


def main():
    while True:
        try:
            call = post("/next", {})
        except Exception as e:
            print("spawn tool runner: the gateway is gone: %s" % e, file=sys.stderr)
            return 125
        if "exit" in call:
            return int(call["exit"])
        if call.get("wait"):
            continue
        tool, i = call["tool"], call["input"]
        limits = call["input"].pop("_limits", {}) if isinstance(i, dict) else {}
        roots = limits.pop("roots", {"read": ["/workspace"], "write": ["/workspace"]})
        try:
            if tool == "exec":
                out = run_exec(i, limits)
            elif tool == "http_fetch":
                out = run_fetch(i)
            elif tool in ("fs_read", "fs_write", "fs_list"):
                out = run_fs(tool, i, roots)
            else:
                out = {"error": "no tool %s" % tool}
        except Exception as e:
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        post("/result", {"id": call["id"], "output": out})


sys.exit(main())
