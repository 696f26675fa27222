"""A sandboxed program sees its toolchain and its own work directory, nothing else of the host.

The secret is a world-readable file (0644 in a 0755 directory) outside /tmp, beside the checkout, as a
credentials or `.env` file in a user's checkout would be: the sandbox user could read it through the
host's permissions, so only the mount layout keeps it out of the program's output (and so of verdicts,
artifacts and MLflow).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from itt_sweep.execution import Program, available, bwrap_status, execute
from itt_sweep.execution.mounts import bind_arguments
from itt_sweep.execution.recipes import RECIPES

needs_bwrap = pytest.mark.skipif(not bwrap_status()[0], reason=f"bubblewrap unusable here: {bwrap_status()[1]}")
CHECKOUT = Path(__file__).resolve().parents[1]

WRAP = {
    "python": "import os\n{body}\nprint('DONE')\n",
    "javascript": "const fs = require('fs');\n{body}\nconsole.log('DONE');\n",
    "typescript": "import * as fs from 'fs';\n{body}\nconsole.log('DONE');\n",
    "java": ("import java.io.*;\nimport java.nio.file.*;\nclass Main {{ public static void main(String[] a) {{\n"
             "{body}\nSystem.out.println(\"DONE\"); }} }}\n"),
    "kotlin": "import java.io.File\n\nfun main() {{\n{body}\nprintln(\"DONE\")\n}}\n",
    "scala": ("import java.io.File\n\nobject Main {{\n  def main(args: Array[String]): Unit = {{\n{body}\n"
              "println(\"DONE\")\n  }}\n}}\n"),
    "csharp": ("using System;\nusing System.IO;\nclass Program {{\n  static void Main() {{\n{body}\n"
               "Console.WriteLine(\"DONE\");\n  }}\n}}\n"),
    "cpp": "#include <bits/stdc++.h>\n#include <dirent.h>\nint main() {{\n{body}\nputs(\"DONE\"); return 0; }}\n",
    "go": "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {{\n{body}\nfmt.Println(\"DONE\")\n}}\n",
    "perl": "use strict;\nuse warnings;\n{body}\nprint \"DONE\\n\";\n",
    "ruby": "{body}\nputs 'DONE'\n",
    "php": "<?php\n{body}\necho \"DONE\\n\";\n",
    "swift": "import Foundation\n{body}\nprint(\"DONE\")\n",
}
# Print the file's content / the directory's entries, or ERR when the program cannot; 'P' is the path.
READ = {
    "python": "try:\n    print('READ', open('P').read())\nexcept OSError:\n    print('ERR')",
    "javascript": "try { console.log('READ', fs.readFileSync('P', 'utf8')); } catch (e) { console.log('ERR'); }",
    "typescript": "try { console.log('READ', fs.readFileSync('P', 'utf8')); } catch (e) { console.log('ERR'); }",
    "java": ("try { System.out.println(\"READ \" + new String(Files.readAllBytes(Paths.get(\"P\")))); } "
             "catch (Exception e) { System.out.println(\"ERR\"); }"),
    "kotlin": "try { println(\"READ \" + File(\"P\").readText()) } catch (e: Exception) { println(\"ERR\") }",
    "scala": ("try { println(\"READ \" + scala.io.Source.fromFile(\"P\").mkString) } "
              "catch { case e: Exception => println(\"ERR\") }"),
    "csharp": ("try { Console.WriteLine(\"READ \" + File.ReadAllText(\"P\")); } "
               "catch (Exception) { Console.WriteLine(\"ERR\"); }"),
    "cpp": ("{ std::ifstream f(\"P\"); if (f) { std::stringstream b; b << f.rdbuf(); "
            "std::cout << \"READ \" << b.str() << std::endl; } else puts(\"ERR\"); }"),
    "go": ("if b, err := os.ReadFile(\"P\"); err == nil {\n\tfmt.Println(\"READ\", string(b))\n} else {\n"
           "\tfmt.Println(\"ERR\")\n}"),
    "perl": "if (open(my $fh, '<', 'P')) { local $/; my $c = <$fh>; print \"READ $c\\n\"; } else { print \"ERR\\n\"; }",
    "ruby": "begin\n  puts 'READ ' + File.read('P')\nrescue SystemCallError\n  puts 'ERR'\nend",
    "php": "$c = @file_get_contents('P'); echo $c === false ? \"ERR\\n\" : \"READ $c\\n\";",
    "swift": "if let c = try? String(contentsOfFile: \"P\") { print(\"READ \" + c) } else { print(\"ERR\") }",
}
LIST = {
    "python": "try:\n    print('LIST', os.listdir('P'))\nexcept OSError:\n    print('ERR')",
    "javascript": "try { console.log('LIST', fs.readdirSync('P').join(',')); } catch (e) { console.log('ERR'); }",
    "typescript": "try { console.log('LIST', fs.readdirSync('P').join(',')); } catch (e) { console.log('ERR'); }",
    "java": ("{ String[] l = new File(\"P\").list(); "
             "System.out.println(l == null ? \"ERR\" : \"LIST \" + String.join(\",\", l)); }"),
    "kotlin": "println(File(\"P\").list()?.joinToString(\",\", \"LIST \") ?: \"ERR\")",
    "scala": "println(Option(new File(\"P\").list()).map(_.mkString(\"LIST \", \",\", \"\")).getOrElse(\"ERR\"))",
    "csharp": ("try { Console.WriteLine(\"LIST \" + string.Join(\",\", Directory.GetFileSystemEntries(\"P\"))); } "
               "catch (Exception) { Console.WriteLine(\"ERR\"); }"),
    "cpp": ("{ DIR* d = opendir(\"P\"); if (d) { std::cout << \"LIST\"; while (dirent* e = readdir(d)) "
            "std::cout << ' ' << e->d_name; std::cout << std::endl; closedir(d); } else puts(\"ERR\"); }"),
    "go": ("if es, err := os.ReadDir(\"P\"); err == nil {\n\tfor _, e := range es {\n"
           "\t\tfmt.Print(e.Name(), \" \")\n\t}\n"
           "\tfmt.Println(\"LIST\")\n} else {\n\tfmt.Println(\"ERR\")\n}"),
    "perl": ("if (opendir(my $dh, 'P')) { print 'LIST ', join(',', readdir($dh)), \"\\n\"; } "
             "else { print \"ERR\\n\"; }"),
    "ruby": "begin\n  puts 'LIST ' + Dir.children('P').join(',')\nrescue SystemCallError\n  puts 'ERR'\nend",
    "php": "$l = @scandir('P'); echo $l === false ? \"ERR\\n\" : 'LIST ' . implode(',', $l) . \"\\n\";",
    "swift": ("if let l = try? FileManager.default.contentsOfDirectory(atPath: \"P\") { print(\"LIST \" + "
              "l.joined(separator: \",\")) } else { print(\"ERR\") }"),
}


def secret_base() -> Path:
    """Outside /tmp, where the sandbox's private /tmp would hide it anyway: beside the checkout, or, for a
    checkout under /tmp (a CI clone), in a world-readable system folder we may write to."""
    for base in (CHECKOUT, Path("/srv"), Path("/opt"), Path("/mnt")):
        real = base.resolve()
        if not any(real.is_relative_to(t) for t in ("/tmp", "/var/tmp")) and os.access(real, os.W_OK):
            return real
    pytest.skip("no writable folder outside /tmp for the secret")


@pytest.fixture
def host_secrets() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A secret in a world-readable file beside the checkout, in a fake MLflow store and a fake stage cache,
    and the (kind, path) probes that must all fail: those files, their folders, the checkout, /root."""
    secret = f"itt-secret-{uuid.uuid4().hex}"
    root = secret_base() / f".itt-secret-test-{uuid.uuid4().hex[:8]}"
    files = [root / "credentials.env", root / "mlruns" / "0" / "meta.yaml", root / "stages" / "abc" / "model.bin"]
    try:
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"TOKEN={secret}\n")
            path.chmod(0o644)
        for folder in {root, *(p.parent for p in files)}:
            folder.chmod(0o755)
        probes = [("read", str(p)) for p in files] + [("list", str(root)), ("read", str(CHECKOUT / "pyproject.toml")),
                                                      ("list", "/root"), ("list", "/home"), ("list", "/srv")]
        yield secret, probes
    finally:
        shutil.rmtree(root, ignore_errors=True)


def probe_program(language: str, probes: list[tuple[str, str]]) -> Program:
    snippets = [(READ if kind == "read" else LIST)[language].replace('"P"', f'"{path}"').replace("'P'", f"'{path}'")
                for kind, path in probes]
    return Program(language=language, source=WRAP[language].format(body="\n".join(snippets)), tests="")


def test_the_secret_is_readable_through_host_permissions_alone(host_secrets) -> None:
    """The premise: without the mount layout, nothing would stop the sandbox user (mode 0644, dirs 0755)."""
    _, probes = host_secrets
    secret_file = Path(probes[0][1])
    assert secret_file.stat().st_mode & 0o004 and all(p.stat().st_mode & 0o005 == 0o005
                                                      for p in secret_file.parents if p != Path("/"))


@needs_bwrap
@pytest.mark.slow
def test_no_language_can_read_or_list_host_files_outside_its_toolchain(host_secrets) -> None:
    secret, probes = host_secrets
    languages = [language for language in WRAP if available(language)]
    verdicts = execute([probe_program(language, probes_with_checkout(probes)) for language in languages])
    for language, verdict in zip(languages, verdicts, strict=True):
        output = verdict.stdout + verdict.stderr
        assert verdict.status == "passed" and "DONE" in verdict.stdout, (language, verdict.status, output[-2000:])
        assert secret not in output, language
        lines = [line for line in verdict.stdout.splitlines() if line.strip()]
        assert lines[:len(probes)] == ["ERR"] * len(probes) and lines[-1] == "DONE", (language, lines)
        # The checkout itself is absent, or shows only the way down to its toolchain folder (bound at its path).
        listing = lines[len(probes)]
        assert listing == "ERR" or "LIST" in listing, (language, listing)
        assert [name for name in os.listdir(CHECKOUT) if name != ".cache" and name in listing] == [], listing


def probes_with_checkout(probes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*probes, ("list", str(CHECKOUT))]


def test_bind_list_holds_system_paths_and_the_recipes_own_nothing_of_the_checkout() -> None:
    """Only the toolchain folder of the checkout is bound; never the checkout, its runs or its data."""
    for recipe in RECIPES.values():
        argv = bind_arguments(recipe.mounts, recipe.tools)
        sources = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ro-bind"]
        assert "/" not in sources and "/usr/bin" in sources
        inside = [s for s in sources if Path(s).is_relative_to(CHECKOUT)]
        assert all(Path(s).is_relative_to(CHECKOUT / ".cache" / "toolchains") for s in inside), inside
        assert not any(s.startswith(("/root", "/home", "/srv", "/mnt", "/work/shared")) for s in sources), sources


def test_a_tool_outside_the_system_prefixes_brings_its_home(tmp_path: Path, monkeypatch) -> None:
    """A toolchain unpacked by hand (a Swift under /opt, say) is bound as its whole home, nothing beside it."""
    home = tmp_path / "opt" / "mytool-1.0"
    (home / "bin").mkdir(parents=True)
    tool = home / "bin" / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{home / 'bin'}:{os.environ['PATH']}")
    argv = bind_arguments((), ("mytool",))
    assert str(home) in argv and str(tmp_path / "opt") not in argv
