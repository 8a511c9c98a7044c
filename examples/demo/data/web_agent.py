"""The demo's web agent: one allowed domain, and the moves a hijacked agent would try."""
import socket
import urllib.error
import urllib.request


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return f"allowed (HTTP {r.status})"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.headers.get('X-Spawn-Denial') or ''}".strip()
    except urllib.error.URLError as e:  # e.g. "Tunnel connection failed: 403 ..."
        return f"refused ({e.reason})"
    except Exception as e:  # an unreachable network is shown, not hidden
        return f"failed ({type(e).__name__})"


def tcp(host, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        return "CONNECTED"
    except OSError as e:
        return f"denied ({e.strerror or type(e).__name__})"


def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError as e:
        return f"denied ({type(e).__name__})"


# On hosts whose DNS maps public names to internal mirrors (as on spawn's build machines),
# the allowlisted name is refused too: the address it resolves to is not public.
print("agent: GET https://deb.debian.org/ (allowlisted):", fetch("https://deb.debian.org/"))
print("agent: GET https://example.com/ (not allowlisted):", fetch("https://example.com/"))
print("agent: GET http://169.254.169.254/ (cloud metadata):", fetch("http://169.254.169.254/latest/meta-data/"))
print("agent: GET http://0xa9fea9fe/ (metadata, hex):", fetch("http://0xa9fea9fe/"))
print("agent: raw TCP 1.1.1.1:22 (around the proxy):", tcp("1.1.1.1", 22))
print("agent: DNS example.com:", resolve("example.com"))
