"""A demo agent: says who it is, then tries a few things a hijacked agent would."""
import ctypes
import os
import socket

libc = ctypes.CDLL(None, use_errno=True)

print(f"agent: running as uid={os.getuid()} gid={os.getgid()} in {os.getcwd()}, "
      f"hostname {socket.gethostname()!r}")
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f if ":" in line)
print(f"agent: capabilities={status['CapEff'].strip()} no_new_privs={status['NoNewPrivs'].strip()} "
      f"seccomp={status['Seccomp'].strip()}")

for path in ["/etc/shadow", "/root/.ssh/id_rsa", "/home"]:
    try:
        open(path).read() if not os.path.isdir(path) else os.listdir(path)
        print(f"agent: read {path}: ALLOWED")
    except OSError as e:
        print(f"agent: read {path}: denied ({e.strerror})")

try:
    open("/usr/bin/evil", "w")
    print("agent: write /usr/bin/evil: ALLOWED")
except OSError as e:
    print(f"agent: write /usr/bin/evil: denied ({e.strerror})")

for host, port in [("169.254.169.254", 80), ("1.1.1.1", 443)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print(f"agent: connect {host}:{port}: ALLOWED")
    except OSError as e:
        print(f"agent: connect {host}:{port}: denied ({e.strerror})")

if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
    print(f"agent: mount tmpfs: denied ({os.strerror(ctypes.get_errno())})")
else:
    print("agent: mount tmpfs: ALLOWED")
