"""The process a python grader runs in (started by `sandbox`, never imported by tuneforge).

It reads `{"source": …, "pairs": [[sample, item], …]}` from stdin, runs the source, calls
`grade(sample, item)` for each pair and writes one JSON list to the stdout it was started
with: `{"reward": x}` or `{"error": "…"}` per pair. What the grader prints goes to stderr.

Before the source runs, the process confines itself (`isolate`: namespaces, the data folder
hidden, every mount read-only but the working folder; then `limit`: resource limits, maybe
another user, no capabilities; see `sandbox`), or writes `{"sandbox_error": …}` and stops.
Then an audit hook refuses what a grader has no business doing here: sockets, starting or
signalling processes, and loading C code by hand (ctypes). The kernel's walls come first;
the hook is a second one, not the only one.
"""

import json
import math
import os
import re
import sys

REFUSED_PREFIXES = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "pty.")
REFUSED_EVENTS = {
    "os.system",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "signal.pthread_kill",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.cdata",
    "ctypes.call_function",
}
# _posixsubprocess starts processes without an audit event: it is not importable at all (nor,
# so, subprocess).
REFUSED_MODULES = {"ctypes", "_ctypes", "_posixsubprocess"}


def _guard(event, args):
    if event == "import" and args[0] in REFUSED_MODULES:
        raise ImportError(f"{args[0]} is not available to python graders")
    if event in REFUSED_EVENTS or event.startswith(REFUSED_PREFIXES):
        raise PermissionError(f"python graders may not do this: {event}")


CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
MS_REMOUNT, MS_BIND = 32, 4096
# Flags a remount must repeat (a user namespace may not drop them), by their mountinfo names.
KEPT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
}
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
CAPABILITY_VERSION_3 = 0x20080522
NOBODY = 65534
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_OPEN_FILES = 256
MAX_PROCESSES = 64


class _Libc:
    """The few system calls python has no function for (ctypes, before the hook)."""

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)

    def call(self, what, name, *args):
        if getattr(self.libc, name)(*args) != 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")


def isolate(libc, hidden):
    """New network, mount and PID namespaces (and a user namespace when not root); each
    hidden folder covered by an empty read-only tmpfs. The PID namespace takes effect for
    the process forked next. Raises OSError when a step fails."""
    root = os.geteuid() == 0
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | (0 if root else CLONE_NEWUSER)
    libc.call("unshare", "unshare", flags)
    if not root:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    libc.call("mount --make-rprivate /", "mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    for folder in hidden:
        if os.path.isdir(folder):
            flags = MS_RDONLY | MS_NOSUID | MS_NODEV
            libc.call(
                f"mount tmpfs on {folder}",
                "mount",
                b"tmpfs",
                folder.encode(),
                b"tmpfs",
                flags,
                b"size=4k",
            )
    read_only_but(libc, os.getcwd())


def read_only_but(libc, workdir):
    """Every mount read-only, but the working folder (a writable mount of its own). The
    root's must succeed; special ones that refuse (some of /proc, /sys) stay as they are."""
    libc.call(
        "bind the working folder",
        "mount",
        workdir.encode(),
        workdir.encode(),
        None,
        MS_BIND | MS_REC,
        None,
    )
    os.chdir(workdir)  # into the new mount: the old working folder is on the read-only one
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" - ")[0].split() for line in f]
    for fields in mounts:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in fields[5].split(","):
            flags |= KEPT_FLAGS.get(option, 0)
        try:
            libc.call(
                f"remount {point} read-only", "mount", None, point.encode(), None, flags, None
            )
        except OSError:
            if point == "/":
                raise


def drop_capabilities(libc):
    """No capabilities left (root without them is bound by file permissions and cannot
    mount, unmount or trace), and none to be gained by exec."""
    ctypes = libc.ctypes
    libc.call("no new privileges", "prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for capability in range(last + 1):
        libc.call("drop a capability", "prctl", PR_CAPBSET_DROP, capability, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice, all zero
    libc.call("capset", "capset", header, data)


def limit(libc, limits):
    """The resource limits; the user nobody when run by root and python's own files are
    readable to others; no capabilities."""
    import resource

    cpu = limits["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0 and all(_readable_to_others(p) for p in sys.path if os.path.isdir(p)):
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    drop_capabilities(libc)


def _readable_to_others(path):
    """Whether another user may read `path` (a folder): it and every folder above it."""
    import stat

    path = os.path.realpath(path)
    if not os.stat(path).st_mode & stat.S_IROTH:
        return False
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _fork_and_wait():
    """In the child: return. In this process: wait for the child and end as it ended (a
    signal as exit status 128 + its number where this process cannot die of it)."""
    child = os.fork()
    if not child:
        return
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def _describe(error):
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _reward(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {"error": f"grade() returned {type(value).__name__}, not a number"}
    if not math.isfinite(value):
        return {"error": f"grade() returned {value}"}
    return {"reward": float(value)}


def main():
    request = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w")
    libc = _Libc()
    try:
        isolate(libc, request["limits"]["hidden"])
    except OSError as error:
        out.write(json.dumps({"sandbox_error": str(error)}))
        return
    # Outside the PID namespace this process waits for its PID 1, which mounts the
    # namespace's /proc and waits for the grader's process: neither is the grader, whose
    # signals (the CPU limit's) then act as they would anywhere.
    _fork_and_wait()
    libc.call(
        "mount /proc", "mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None
    )
    _fork_and_wait()
    try:
        limit(libc, request["limits"])
    except OSError as error:
        out.write(json.dumps({"sandbox_error": str(error)}))
        return
    # What the grader could reach ctypes by is dropped; the audit hook refuses it anew.
    del libc
    for name in ("ctypes", "_ctypes"):
        sys.modules.pop(name, None)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.addaudithook(_guard)
    namespace = {"__name__": "grader"}
    try:
        exec(compile(request["source"], "grader.py", "exec"), namespace)
        grade = namespace["grade"]
    except BaseException as error:
        results = [{"error": _describe(error)}] * len(request["pairs"])
    else:
        results = []
        for sample, item in request["pairs"]:
            try:
                results.append(_reward(grade(sample, item)))
            except BaseException as error:
                results.append({"error": _describe(error)})
    out.write(json.dumps(results))
    out.flush()


if __name__ == "__main__":
    main()
