"""Hostile programs, per language: each is contained, leaves no process behind, and the executor goes on.

Survivors are found two ways: by a marker string unique to the test in the command line of every child the
program starts, and (as root) by the uid: the tests lease sandbox users from a uid range of their own, so
any process of those uids after `execute` returned is a leak.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from itt_sweep.execution import Limits, Program, Verdict, available, bwrap_status, execute
from itt_sweep.execution.executor import execute_one
from itt_sweep.execution.sandbox import UID_POOL_SIZE, user_processes

LANGUAGES = ("python", "javascript", "java", "cpp")
TEST_UID_BASE = 300_000 + (os.getpid() % 10_000) * UID_POOL_SIZE
SHORT = Limits(timeout_s=3.0, memory_mb=512, max_output_bytes=4096, max_processes=32)
LOOPING = SHORT.model_copy(update={"timeout_s": 2.0})  # for programs that only ever end by timing out
needs_bwrap = pytest.mark.skipif(not bwrap_status()[0], reason=f"bubblewrap unusable here: {bwrap_status()[1]}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="uid leasing (and its checks) needs root")

# Per language: a program made of `body`, with MARKER, PORT, PATH and NAME substituted by the tests.
WRAP = {
    "python": "import os, sys, subprocess, socket\n{body}\n",
    "javascript": "const cp = require('child_process'), fs = require('fs'), net = require('net');\n{body}\n",
    "java": ("import java.util.*;\nimport java.io.*;\nimport java.nio.file.*;\n"
             "class Main {{ public static void main(String[] args) throws Exception {{\n{body}\n}} }}\n"),
    "cpp": ("#include <bits/stdc++.h>\n#include <unistd.h>\n#include <sys/socket.h>\n#include <arpa/inet.h>\n"
            "extern char **environ;\nint main() {{\n{body}\nreturn 0; }}\n"),
}
SPAWN = {  # start `sh -c "sleep 60; echo MARKER"` without waiting for it
    "python": "subprocess.Popen(['sh', '-c', 'sleep 60; echo MARKER'], start_new_session=True)",
    "javascript": "cp.spawn('sh', ['-c', 'sleep 60; echo MARKER'], {detached: true, stdio: 'ignore'}).unref();",
    "java": "new ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start();",
    "cpp": ("if (fork() == 0) { setsid(); execl(\"/bin/sh\", \"sh\", \"-c\", \"sleep 60; echo MARKER\", "
            "(char*)0); _exit(1); }"),
}
BODIES: dict[str, dict[str, str]] = {
    "infinite_loop": {
        "python": "SPAWN\nwhile True:\n    pass",
        "javascript": "SPAWN\nwhile (true) {}",
        "java": "SPAWN\nwhile (true) {}",
        "cpp": "SPAWN\nvolatile long x = 0; while (true) { x++; }",
    },
    "fork_bomb": {
        "python": "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "javascript": ("while (true) { try { cp.spawn('sh', ['-c', 'sleep 60; echo MARKER']); } "
                       "catch (e) {} }"),
        "java": ("while (true) { try { new ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start(); }"
                 " catch (Throwable e) {} }"),
        "cpp": "while (true) { fork(); }",
    },
    "memory_bomb": {
        "python": "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))",
        "javascript": "const chunks = [];\nwhile (true) { chunks.push(new Array(1e6).fill(1.5)); }",
        "java": "List<long[]> chunks = new ArrayList<>();\nwhile (true) { chunks.add(new long[1 << 20]); }",
        "cpp": "std::vector<char*> chunks;\nwhile (true) { char* c = new char[1 << 24]; memset(c, 1, 1 << 24); "
               "chunks.push_back(c); }",
    },
    "connect": {
        "python": ("try:\n    socket.create_connection(('127.0.0.1', PORT), timeout=2)\n    print('CONNECTED')\n"
                   "except OSError as e:\n    print('BLOCKED', e)"),
        "javascript": ("const s = net.connect(PORT, '127.0.0.1', () => { console.log('CONNECTED'); s.end(); });\n"
                       "s.on('error', e => console.log('BLOCKED ' + e.code));"),
        "java": ("try (java.net.Socket s = new java.net.Socket(\"127.0.0.1\", PORT)) { "
                 "System.out.println(\"CONNECTED\"); } catch (IOException e) { System.out.println(\"BLOCKED\"); }"),
        "cpp": ("int fd = socket(AF_INET, SOCK_STREAM, 0); sockaddr_in a{}; a.sin_family = AF_INET; "
                "a.sin_port = htons(PORT); a.sin_addr.s_addr = inet_addr(\"127.0.0.1\");\n"
                "puts(connect(fd, (sockaddr*)&a, sizeof a) == 0 ? \"CONNECTED\" : \"BLOCKED\");"),
    },
    "write_outside": {
        "python": "try:\n    open('PATH', 'w').write('x')\n    print('WROTE')\nexcept OSError as e:\n    print(e)",
        "javascript": "try { fs.writeFileSync('PATH', 'x'); console.log('WROTE'); } catch (e) { console.log(e.code); }",
        "java": ("try { Files.writeString(Paths.get(\"PATH\"), \"x\"); System.out.println(\"WROTE\"); } "
                 "catch (IOException e) { System.out.println(e); }"),
        "cpp": "FILE* f = fopen(\"PATH\", \"w\"); if (f && fputs(\"x\", f) >= 0 && fclose(f) == 0) puts(\"WROTE\");",
    },
    "print_env": {
        "python": ("print(dict(os.environ))\nfor pid in ['1', 'self', str(os.getppid())]:\n    try:\n"
                   "        print(open(f'/proc/{pid}/environ').read())\n    except OSError:\n        pass"),
        "javascript": "console.log(JSON.stringify(process.env));",
        "java": "System.out.println(System.getenv());",
        "cpp": "for (char **e = environ; *e; e++) puts(*e);",
    },
    "print_100_mb": {
        "python": "line = 'x' * 999 + '\\n'\nfor _ in range(100_000):\n    sys.stdout.write(line)",
        "javascript": "const line = 'x'.repeat(999) + '\\n'; for (let i = 0; i < 100000; i++) fs.writeSync(1, line);",
        "java": ("PrintStream out = new PrintStream(new BufferedOutputStream(System.out, 1 << 16));\n"
                 "String line = \"x\".repeat(999); for (int i = 0; i < 100000; i++) out.println(line); out.flush();"),
        "cpp": "std::string line(999, 'x'); for (int i = 0; i < 100000; i++) puts(line.c_str());",
    },
    "background_child": {
        "python": "SPAWN\nprint('parent done')",
        "javascript": "SPAWN\nconsole.log('parent done');",
        "java": "SPAWN\nSystem.out.println(\"parent done\");",
        "cpp": "SPAWN\nputs(\"parent done\");",
    },
}
STILL_WORKS = {
    "python": "print(6 * 7)",
    "javascript": "console.log(6 * 7);",
    "java": "System.out.println(6 * 7);",
    "cpp": "printf(\"%d\\n\", 6 * 7);",
}


@pytest.fixture(autouse=True)
def private_uid_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITT_SANDBOX_UID_BASE", str(TEST_UID_BASE))


def hostile(language: str, behaviour: str, marker: str, limits: Limits = SHORT, **values: object) -> Program:
    if not available(language):
        pytest.skip(f"{language} toolchain missing")
    body = BODIES[behaviour][language].replace("SPAWN", SPAWN[language]).replace("MARKER", marker)
    for name, value in values.items():
        body = body.replace(name, str(value))
    return Program(language=language, source=WRAP[language].format(body=body), tests="", limits=limits)


def leftovers(marker: str) -> list[str]:
    """Processes that outlived the program: the marker in their command line, or (as root) a test uid."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline and str(os.getpid()) != entry.name:
                found.append(f"{entry.name}: {cmdline}")
    if os.geteuid() == 0:
        for uid in range(TEST_UID_BASE, TEST_UID_BASE + 8):
            found += [f"{pid}: uid {uid}" for pid in user_processes(uid)]
    return found


def run(program: Program, sandboxed: bool = True) -> tuple[Verdict, float]:
    started = time.monotonic()
    verdict = execute([program])[0] if sandboxed else execute_one(program, sandboxed=False)
    return verdict, time.monotonic() - started


def assert_contained(verdict: Verdict, elapsed: float, marker: str, language: str, sandboxed: bool = True) -> None:
    assert elapsed < 60, f"the executor took {elapsed:.0f} s"
    assert verdict.status != "sandbox_error", verdict.stderr
    time.sleep(0.2)
    assert leftovers(marker) == []
    body = STILL_WORKS[language]
    after = Program(language=language, source=WRAP[language].format(body=body), tests="")
    [check] = execute([after]) if sandboxed else [execute_one(after, sandboxed=False)]
    assert (check.status, check.stdout.strip()) == ("passed", "42"), check.stderr


def sandbox_modes() -> list:
    return [pytest.param(True, id="bwrap", marks=needs_bwrap), pytest.param(False, id="rlimits-only")]


@pytest.mark.parametrize("sandboxed", sandbox_modes())
@pytest.mark.parametrize("language", LANGUAGES)
def test_infinite_loop_times_out_and_its_children_die(language: str, sandboxed: bool) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    verdict, elapsed = run(hostile(language, "infinite_loop", marker, LOOPING), sandboxed)
    assert verdict.status == "timeout"
    assert verdict.exit_code is None and LOOPING.timeout_s <= verdict.run_s < LOOPING.timeout_s + 5
    assert_contained(verdict, elapsed, marker, language, sandboxed)


@pytest.mark.parametrize("sandboxed", sandbox_modes())
@pytest.mark.parametrize("language", LANGUAGES)
def test_fork_bomb_is_contained(language: str, sandboxed: bool) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    tasks_before = len(os.listdir("/proc"))
    verdict, elapsed = run(hostile(language, "fork_bomb", marker, LOOPING), sandboxed)
    assert verdict.status in ("timeout", "runtime_error", "memory_exceeded")
    assert len(os.listdir("/proc")) < tasks_before + 50
    assert_contained(verdict, elapsed, marker, language, sandboxed)


@needs_root
def test_fork_bomb_cannot_exceed_the_process_cap() -> None:
    source = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
              "            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)")
    limits = Limits(timeout_s=10, max_processes=20)
    [verdict] = execute([Program(language="python", source=source, tests="", limits=limits)])
    assert verdict.status == "passed"
    assert int(verdict.stdout) < 20


@pytest.mark.parametrize("sandboxed", sandbox_modes())
@pytest.mark.parametrize("language", LANGUAGES)
def test_memory_bomb_is_stopped_not_hung(language: str, sandboxed: bool) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    limits = SHORT.model_copy(update={"timeout_s": 20.0})
    verdict, elapsed = run(hostile(language, "memory_bomb", marker, limits), sandboxed)
    assert verdict.status in ("memory_exceeded", "runtime_error"), verdict.stderr
    assert verdict.run_s < 20
    assert_contained(verdict, elapsed, marker, language, sandboxed)


@needs_bwrap
@pytest.mark.parametrize("language", LANGUAGES)
def test_program_cannot_reach_a_port_open_on_the_host(language: str) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        program = hostile(language, "connect", marker, PORT=server.getsockname()[1])
        verdict, elapsed = run(program)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert "CONNECTED" not in verdict.stdout
    assert "BLOCKED" in verdict.stdout
    assert_contained(verdict, elapsed, marker, language)


@needs_bwrap
@pytest.mark.parametrize("language", LANGUAGES)
def test_program_cannot_write_outside_its_work_directory(language: str, tmp_path: Path) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    tmp_path.chmod(0o777)  # even a world-writable directory is out of reach
    target = tmp_path / "escaped.txt"
    verdict, elapsed = run(hostile(language, "write_outside", marker, PATH=target))
    assert not target.exists()
    assert "WROTE" not in verdict.stdout
    assert_contained(verdict, elapsed, marker, language)


@needs_root
@pytest.mark.parametrize("language", ["python", "cpp"])
def test_without_bwrap_the_sandbox_user_cannot_write_root_files(language: str, tmp_path: Path) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    target = tmp_path / "escaped.txt"
    verdict, elapsed = run(hostile(language, "write_outside", marker, PATH=target), sandboxed=False)
    assert not target.exists()
    assert_contained(verdict, elapsed, marker, language, sandboxed=False)


@pytest.mark.parametrize("sandboxed", sandbox_modes())
@pytest.mark.parametrize("language", LANGUAGES)
def test_program_does_not_see_the_callers_environment(language: str, sandboxed: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("ITT_TEST_SECRET", secret)
    verdict, elapsed = run(hostile(language, "print_env", marker), sandboxed)
    assert verdict.status == "passed", verdict.stderr
    assert "PATH=" in verdict.stdout or "'PATH'" in verdict.stdout or '"PATH"' in verdict.stdout
    assert secret not in verdict.stdout + verdict.stderr
    assert_contained(verdict, elapsed, marker, language, sandboxed)


@pytest.mark.parametrize("sandboxed", sandbox_modes())
@pytest.mark.parametrize("language", LANGUAGES)
def test_printing_100_mb_is_capped(language: str, sandboxed: bool) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    limits = SHORT.model_copy(update={"timeout_s": 20.0})
    verdict, elapsed = run(hostile(language, "print_100_mb", marker, limits), sandboxed)
    assert verdict.status == "passed", verdict.stderr
    assert len(verdict.stdout) <= limits.max_output_bytes + 100
    assert "output truncated" in verdict.stdout
    assert verdict.stdout.startswith("x" * 999)
    assert_contained(verdict, elapsed, marker, language, sandboxed)


@pytest.mark.parametrize("sandboxed", sandbox_modes())
@pytest.mark.parametrize("language", LANGUAGES)
def test_background_child_left_running_is_killed(language: str, sandboxed: bool) -> None:
    marker = f"itt-{uuid.uuid4().hex}"
    verdict, elapsed = run(hostile(language, "background_child", marker), sandboxed)
    assert verdict.status == "passed", verdict.stderr
    assert "parent done" in verdict.stdout
    assert verdict.run_s < SHORT.timeout_s  # the verdict did not wait for the child
    assert_contained(verdict, elapsed, marker, language, sandboxed)
