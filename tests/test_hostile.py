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
from itt_sweep.execution.users import UID_POOL_SIZE, user_processes

LANGUAGES = ("python", "javascript", "java", "cpp")  # one test per behaviour, with and without bubblewrap
# The other languages: their whole corpus in one `execute` call (one batch compile for kotlin, scala, ...).
CORPUS_LANGUAGES = ("typescript", "kotlin", "scala", "csharp", "ruby", "php", "perl", "go", "swift")
SLOW_COMPILERS = ("kotlin", "scala", "typescript")  # their corpus takes 12-25 s, compiling included
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
    "typescript": ("import * as cp from 'child_process';\nimport * as fs from 'fs';\nimport * as net from 'net';\n"
                   "{body}\n"),
    "kotlin": "import java.io.*\n\nfun main() {{\n{body}\n}}\n",
    "scala": "import java.io._\n\nobject Main {{\n  def main(args: Array[String]): Unit = {{\n{body}\n  }}\n}}\n",
    "csharp": ("using System;\nusing System.IO;\nusing System.Diagnostics;\nusing System.Collections.Generic;\n"
               "class Program {{\n  static void Main() {{\n{body}\n  }}\n}}\n"),
    "ruby": "require 'socket'\n{body}\n",
    "php": "<?php\n{body}\n",
    "perl": "use strict;\nuse warnings;\nuse IO::Socket::INET;\n{body}\n",
    "go": ("package main\n\nimport (\n\t\"fmt\"\n\t\"net\"\n\t\"os\"\n\t\"os/exec\"\n\t\"strings\"\n\t\"syscall\"\n"
           "\t\"time\"\n)\n\nvar _, _, _, _, _ = fmt.Sprint, net.Dial, os.Getenv, strings.Repeat, time.Second\n"
           "var _, _ = exec.Command, syscall.Getpid\n\nfunc main() {{\n{body}\n}}\n"),
    "swift": "import Foundation\n{body}\n",
}
SPAWN = {  # start `sh -c "sleep 60; echo MARKER"` without waiting for it
    "python": "subprocess.Popen(['sh', '-c', 'sleep 60; echo MARKER'], start_new_session=True)",
    "javascript": "cp.spawn('sh', ['-c', 'sleep 60; echo MARKER'], {detached: true, stdio: 'ignore'}).unref();",
    "java": "new ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start();",
    "cpp": ("if (fork() == 0) { setsid(); execl(\"/bin/sh\", \"sh\", \"-c\", \"sleep 60; echo MARKER\", "
            "(char*)0); _exit(1); }"),
    "typescript": "cp.spawn('sh', ['-c', 'sleep 60; echo MARKER'], {detached: true, stdio: 'ignore'}).unref();",
    "kotlin": "ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start()",
    "scala": "new ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start()",
    "csharp": ("Process.Start(new ProcessStartInfo(\"sh\", \"-c \\\"sleep 60; echo MARKER\\\"\") "
               "{ UseShellExecute = false });"),
    "ruby": "Process.detach(spawn('sh', '-c', 'sleep 60; echo MARKER', pgroup: true))",
    "php": "exec('sh -c \"sleep 60; echo MARKER\" > /dev/null 2>&1 &');",
    "perl": "if (fork() == 0) { setpgrp(0, 0); exec('sh', '-c', 'sleep 60; echo MARKER'); }",
    "go": ("cmd := exec.Command(\"sh\", \"-c\", \"sleep 60; echo MARKER\")\n"
           "cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}\ncmd.Start()"),
    "swift": ("let child = Process()\nchild.executableURL = URL(fileURLWithPath: \"/bin/sh\")\n"
              "child.arguments = [\"-c\", \"sleep 60; echo MARKER\"]\ntry! child.run()"),
}
BODIES: dict[str, dict[str, str]] = {
    "infinite_loop": {
        "python": "SPAWN\nwhile True:\n    pass",
        "javascript": "SPAWN\nwhile (true) {}",
        "java": "SPAWN\nwhile (true) {}",
        "cpp": "SPAWN\nvolatile long x = 0; while (true) { x++; }",
        "typescript": "SPAWN\nwhile (true) {}",
        "kotlin": "SPAWN\nwhile (true) {}",
        "scala": "SPAWN\nwhile (true) {}",
        "csharp": "SPAWN\nwhile (true) {}",
        "ruby": "SPAWN\nloop {}",
        "php": "SPAWN\nwhile (true) {}",
        "perl": "SPAWN\nwhile (1) {}",
        "go": "SPAWN\nfor {\n}",
        "swift": "SPAWN\nwhile true {}",
    },
    "fork_bomb": {
        "python": "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "javascript": ("while (true) { try { cp.spawn('sh', ['-c', 'sleep 60; echo MARKER']); } "
                       "catch (e) {} }"),
        "java": ("while (true) { try { new ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start(); }"
                 " catch (Throwable e) {} }"),
        "cpp": "while (true) { fork(); }",
        "typescript": "while (true) { try { cp.spawn('sh', ['-c', 'sleep 60; echo MARKER']); } catch (e) {} }",
        "kotlin": ("while (true) { try { ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start() } "
                   "catch (e: Throwable) {} }"),
        "scala": ("while (true) { try { new ProcessBuilder(\"sh\", \"-c\", \"sleep 60; echo MARKER\").start() } "
                  "catch { case e: Throwable => } }"),
        "csharp": ("while (true) { try { Process.Start(new ProcessStartInfo(\"sh\", "
                   "\"-c \\\"sleep 60; echo MARKER\\\"\") { UseShellExecute = false }); } catch (Exception) {} }"),
        "ruby": "loop do\n  begin\n    fork\n  rescue StandardError\n  end\nend",
        "php": "while (true) { @exec('sh -c \"sleep 60; echo MARKER\" > /dev/null 2>&1 &'); }",
        "perl": "while (1) { fork(); }",
        "go": "for {\n\texec.Command(\"sh\", \"-c\", \"sleep 60; echo MARKER\").Start()\n}",
        "swift": ("while true {\n  let p = Process()\n  p.executableURL = URL(fileURLWithPath: \"/bin/sh\")\n"
                  "  p.arguments = [\"-c\", \"sleep 60; echo MARKER\"]\n  try? p.run()\n}"),
    },
    "memory_bomb": {
        "python": "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))",
        "javascript": "const chunks = [];\nwhile (true) { chunks.push(new Array(1e6).fill(1.5)); }",
        "java": "List<long[]> chunks = new ArrayList<>();\nwhile (true) { chunks.add(new long[1 << 20]); }",
        "cpp": "std::vector<char*> chunks;\nwhile (true) { char* c = new char[1 << 24]; memset(c, 1, 1 << 24); "
               "chunks.push_back(c); }",
        "typescript": "const chunks: number[][] = [];\nwhile (true) { chunks.push(new Array(1e6).fill(1.5)); }",
        "kotlin": "val chunks = ArrayList<LongArray>()\nwhile (true) { chunks.add(LongArray(1 shl 20)) }",
        "scala": ("val chunks = new java.util.ArrayList[Array[Long]]()\n"
                  "while (true) { chunks.add(new Array[Long](1 << 20)) }"),
        "csharp": "var chunks = new List<long[]>();\nwhile (true) { chunks.Add(new long[1 << 20]); }",
        "ruby": "chunks = []\nloop { chunks << ('x' * 10_000_000) }",
        "php": "ini_set('memory_limit', '-1');\n$chunks = [];\nwhile (true) { $chunks[] = str_repeat('x', 10000000); }",
        "perl": "my @chunks;\nwhile (1) { push @chunks, 'x' x 10_000_000; }",
        "go": ("var chunks [][]byte\nfor {\n\tc := make([]byte, 10_000_000)\n\tfor i := range c {\n\t\tc[i] = 1\n\t}\n"
               "\tchunks = append(chunks, c)\n}"),
        "swift": "var chunks: [[UInt8]] = []\nwhile true { chunks.append([UInt8](repeating: 1, count: 10_000_000)) }",
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
        "typescript": ("const s = net.connect(PORT, '127.0.0.1', () => { console.log('CONNECTED'); s.end(); });\n"
                       "s.on('error', (e: any) => console.log('BLOCKED ' + e.code));"),
        "kotlin": ("try { java.net.Socket(\"127.0.0.1\", PORT).use { println(\"CONNECTED\") } } "
                   "catch (e: IOException) { println(\"BLOCKED\") }"),
        "scala": ("try { val s = new java.net.Socket(\"127.0.0.1\", PORT); println(\"CONNECTED\"); s.close() } "
                  "catch { case e: IOException => println(\"BLOCKED\") }"),
        "csharp": ("try { new System.Net.Sockets.TcpClient(\"127.0.0.1\", PORT); Console.WriteLine(\"CONNECTED\"); } "
                   "catch (Exception) { Console.WriteLine(\"BLOCKED\"); }"),
        "ruby": ("begin\n  TCPSocket.new('127.0.0.1', PORT)\n  puts 'CONNECTED'\nrescue SystemCallError => e\n"
                 "  puts \"BLOCKED #{e}\"\nend"),
        "php": ("$s = @fsockopen('127.0.0.1', PORT, $errno, $errstr, 2);\n"
                "echo $s ? \"CONNECTED\\n\" : \"BLOCKED $errstr\\n\";"),
        "perl": ("my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => PORT, Proto => 'tcp', "
                 "Timeout => 2);\nprint $s ? \"CONNECTED\\n\" : \"BLOCKED\\n\";"),
        "go": ("c, err := net.DialTimeout(\"tcp\", \"127.0.0.1:PORT\", 2*time.Second)\nif err == nil {\n"
               "\tfmt.Println(\"CONNECTED\")\n\tc.Close()\n} else {\n\tfmt.Println(\"BLOCKED\", err)\n}"),
    },
    "write_outside": {
        "python": "try:\n    open('PATH', 'w').write('x')\n    print('WROTE')\nexcept OSError as e:\n    print(e)",
        "javascript": "try { fs.writeFileSync('PATH', 'x'); console.log('WROTE'); } catch (e) { console.log(e.code); }",
        "java": ("try { Files.writeString(Paths.get(\"PATH\"), \"x\"); System.out.println(\"WROTE\"); } "
                 "catch (IOException e) { System.out.println(e); }"),
        "cpp": "FILE* f = fopen(\"PATH\", \"w\"); if (f && fputs(\"x\", f) >= 0 && fclose(f) == 0) puts(\"WROTE\");",
        "typescript": ("try { fs.writeFileSync('PATH', 'x'); console.log('WROTE'); } "
                       "catch (e: any) { console.log(e.code); }"),
        "kotlin": "try { File(\"PATH\").writeText(\"x\"); println(\"WROTE\") } catch (e: IOException) { println(e) }",
        "scala": ("try { val w = new FileWriter(\"PATH\"); w.write(\"x\"); w.close(); println(\"WROTE\") } "
                  "catch { case e: IOException => println(e) }"),
        "csharp": ("try { File.WriteAllText(\"PATH\", \"x\"); Console.WriteLine(\"WROTE\"); } "
                   "catch (Exception e) { Console.WriteLine(e.Message); }"),
        "ruby": "begin\n  File.write('PATH', 'x')\n  puts 'WROTE'\nrescue SystemCallError => e\n  puts e\nend",
        "php": "echo @file_put_contents('PATH', 'x') !== false ? \"WROTE\\n\" : \"refused\\n\";",
        "perl": ("if (open(my $fh, '>', 'PATH')) { print $fh 'x'; close $fh; print \"WROTE\\n\"; } "
                 "else { print \"$!\\n\"; }"),
        "go": ("if err := os.WriteFile(\"PATH\", []byte(\"x\"), 0644); err == nil {\n\tfmt.Println(\"WROTE\")\n"
               "} else {\n\tfmt.Println(err)\n}"),
        "swift": ("do {\n  try \"x\".write(toFile: \"PATH\", atomically: false, encoding: .utf8)\n  print(\"WROTE\")\n"
                  "} catch {\n  print(error)\n}"),
    },
    "print_env": {
        "python": ("print(dict(os.environ))\nfor pid in ['1', 'self', str(os.getppid())]:\n    try:\n"
                   "        print(open(f'/proc/{pid}/environ').read())\n    except OSError:\n        pass"),
        "javascript": "console.log(JSON.stringify(process.env));",
        "java": "System.out.println(System.getenv());",
        "cpp": "for (char **e = environ; *e; e++) puts(*e);",
        "typescript": "console.log(JSON.stringify(process.env));",
        "kotlin": "println(System.getenv())",
        "scala": "println(System.getenv())",
        "csharp": ("foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables()) "
                   "Console.WriteLine(e.Key + \"=\" + e.Value);"),
        "ruby": "p ENV.to_h",
        "php": "var_export(getenv());",
        "perl": "print \"$_=$ENV{$_}\\n\" for sort keys %ENV;",
        "go": "for _, e := range os.Environ() {\n\tfmt.Println(e)\n}",
        "swift": "for (k, v) in ProcessInfo.processInfo.environment { print(\"\\(k)=\\(v)\") }",
    },
    "print_100_mb": {
        "python": "line = 'x' * 999 + '\\n'\nfor _ in range(100_000):\n    sys.stdout.write(line)",
        "javascript": "const line = 'x'.repeat(999) + '\\n'; for (let i = 0; i < 100000; i++) fs.writeSync(1, line);",
        "java": ("PrintStream out = new PrintStream(new BufferedOutputStream(System.out, 1 << 16));\n"
                 "String line = \"x\".repeat(999); for (int i = 0; i < 100000; i++) out.println(line); out.flush();"),
        "cpp": "std::string line(999, 'x'); for (int i = 0; i < 100000; i++) puts(line.c_str());",
        "typescript": "const line = 'x'.repeat(999) + '\\n'; for (let i = 0; i < 100000; i++) fs.writeSync(1, line);",
        "kotlin": ("val out = PrintStream(BufferedOutputStream(System.out, 1 shl 16))\nval line = \"x\".repeat(999)\n"
                   "for (i in 0 until 100000) out.println(line)\nout.flush()"),
        "scala": ("val out = new PrintStream(new BufferedOutputStream(System.out, 1 << 16))\nval line = \"x\" * 999\n"
                  "for (i <- 0 until 100000) out.println(line)\nout.flush()"),
        "csharp": ("var line = new string('x', 999);\n"
                   "var o = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false),"
                   " 1 << 16);\n"
                   "for (int i = 0; i < 100000; i++) o.WriteLine(line);\no.Flush();"),
        "ruby": "line = 'x' * 999 + \"\\n\"\n100_000.times { $stdout.write(line) }",
        "php": "$line = str_repeat('x', 999) . \"\\n\";\nfor ($i = 0; $i < 100000; $i++) fwrite(STDOUT, $line);",
        "perl": "my $line = ('x' x 999) . \"\\n\";\nprint $line for 1 .. 100000;",
        "go": ("line := strings.Repeat(\"x\", 999) + \"\\n\"\nfor i := 0; i < 100000; i++ {\n"
               "\tos.Stdout.WriteString(line)\n}"),
        "swift": ("let data = (String(repeating: \"x\", count: 999) + \"\\n\").data(using: .utf8)!\n"
                  "for _ in 0..<100000 { FileHandle.standardOutput.write(data) }"),
    },
    "background_child": {
        "python": "SPAWN\nprint('parent done')",
        "javascript": "SPAWN\nconsole.log('parent done');",
        "java": "SPAWN\nSystem.out.println(\"parent done\");",
        "cpp": "SPAWN\nputs(\"parent done\");",
        "typescript": "SPAWN\nconsole.log('parent done');",
        "kotlin": "SPAWN\nprintln(\"parent done\")",
        "scala": "SPAWN\nprintln(\"parent done\")",
        "csharp": "SPAWN\nConsole.WriteLine(\"parent done\");",
        "ruby": "SPAWN\nputs 'parent done'",
        "php": "SPAWN\necho \"parent done\\n\";",
        "perl": "SPAWN\nprint \"parent done\\n\";",
        "go": "SPAWN\nfmt.Println(\"parent done\")",
        "swift": "SPAWN\nprint(\"parent done\")",
    },
}
STILL_WORKS = {
    "python": "print(6 * 7)",
    "javascript": "console.log(6 * 7);",
    "java": "System.out.println(6 * 7);",
    "cpp": "printf(\"%d\\n\", 6 * 7);",
    "typescript": "console.log(6 * 7);",
    "kotlin": "println(6 * 7)",
    "scala": "println(6 * 7)",
    "csharp": "Console.WriteLine(6 * 7);",
    "ruby": "puts 6 * 7",
    "php": "echo 6 * 7, \"\\n\";",
    "perl": "print 6 * 7, \"\\n\";",
    "go": "fmt.Println(6 * 7)",
    "swift": "print(6 * 7)",
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
        for uid in range(TEST_UID_BASE, TEST_UID_BASE + 16):
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


CORPUS_LIMITS = {  # per behaviour; the others get 10 s, room for a JVM start on a loaded machine
    "infinite_loop": LOOPING,
    "fork_bomb": LOOPING,
    "memory_bomb": SHORT.model_copy(update={"timeout_s": 20.0}),
    "print_100_mb": SHORT.model_copy(update={"timeout_s": 20.0}),
}


def assert_corpus_verdict(behaviour: str, verdict: Verdict, secret: str) -> None:
    """What each hostile behaviour must come to (the same outcomes as the per-behaviour tests above)."""
    status, out = verdict.status, verdict.stdout
    if behaviour == "infinite_loop":
        assert status == "timeout" and verdict.exit_code is None
    elif behaviour == "fork_bomb":
        assert status in ("timeout", "runtime_error", "memory_exceeded")
    elif behaviour == "memory_bomb":
        assert status in ("memory_exceeded", "runtime_error") and verdict.run_s < 20
    elif behaviour == "connect":
        assert "BLOCKED" in out and "CONNECTED" not in out
    elif behaviour == "write_outside":
        assert "WROTE" not in out
    elif behaviour == "print_env":
        assert status == "passed" and secret not in out + verdict.stderr
        assert "PATH=" in out or "'PATH'" in out or '"PATH"' in out
    elif behaviour == "print_100_mb":
        assert status == "passed" and "output truncated" in out and out.startswith("x" * 999)
        assert len(out) <= SHORT.max_output_bytes + 100
    elif behaviour == "background_child":
        assert status == "passed" and "parent done" in out and verdict.run_s < 10


@needs_bwrap
@pytest.mark.parametrize("language", [pytest.param(lang, marks=pytest.mark.slow) if lang in SLOW_COMPILERS
                                      else lang for lang in CORPUS_LANGUAGES])
def test_hostile_corpus_is_contained(language: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not available(language):
        pytest.skip(f"{language} toolchain missing")
    marker, secret = f"itt-{uuid.uuid4().hex}", f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("ITT_TEST_SECRET", secret)
    tmp_path.chmod(0o777)
    target = tmp_path / "escaped.txt"
    behaviours = [behaviour for behaviour, bodies in BODIES.items() if language in bodies]
    assert len(behaviours) >= 3
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        values = {"connect": {"PORT": server.getsockname()[1]}, "write_outside": {"PATH": target}}
        programs = [hostile(language, behaviour, marker, CORPUS_LIMITS.get(behaviour, SHORT.model_copy(
            update={"timeout_s": 10.0})), **values.get(behaviour, {})) for behaviour in behaviours]
        started = time.monotonic()
        verdicts = execute(programs)
        elapsed = time.monotonic() - started
        with pytest.raises(BlockingIOError):
            server.accept()
    for behaviour, verdict in zip(behaviours, verdicts, strict=True):
        assert verdict.status not in ("sandbox_error", "compile_error"), (behaviour, verdict.stderr)
        try:
            assert_corpus_verdict(behaviour, verdict, secret)
        except AssertionError as error:
            raise AssertionError(f"{behaviour}: {verdict.status} {verdict.stdout[:300]!r} "
                                 f"{verdict.stderr[-600:]!r}") from error
    assert not target.exists()
    assert_contained(verdicts[0], elapsed, marker, language)
