"""Syntax checkers that take many files in one process: the "compile" step of interpreted languages, batched.

`python3 -m py_compile`, `node --check` and `ruby -c` each start an interpreter for one file, which costs as
much as running the program. These checkers do the same check (Python's `compile`, the CommonJS function
wrapper that node compiles a module with, Ruby's instruction-sequence compiler) for every file named on
their command line, and report each failure as `<file>: error: <message>`, the form `batching` attributes
to programs. They are passed to the interpreter verbatim (`-c`/`-e`), so they are plain strings here.
"""

from __future__ import annotations

PYTHON = """\
import sys, traceback
failed = 0
for path in sys.argv[1:]:
    try:
        with open(path, 'rb') as handle:
            compile(handle.read(), path, 'exec', dont_inherit=True)
    except Exception as error:
        failed = 1
        message = ''.join(traceback.format_exception_only(type(error), error))
        sys.stderr.write(path + ': error: ' + message.rstrip() + '\\n')
sys.exit(failed)
"""

JAVASCRIPT = """\
const fs = require('fs'), vm = require('vm');
const params = ['exports', 'require', 'module', '__filename', '__dirname'];
let failed = 0;
for (const path of process.argv.slice(1)) {
  let source = fs.readFileSync(path, 'utf8');
  if (source.startsWith('#!')) source = '//' + source.slice(2);
  try {
    vm.compileFunction(source, params, { filename: path });
  } catch (error) {
    failed = 1;
    const where = String(error && error.stack || error).split('\\n    at ')[0];
    process.stderr.write(path + ': error: ' + where + '\\n');
  }
}
process.exitCode = failed;
"""

RUBY = """\
failed = false
ARGV.each do |path|
  begin
    RubyVM::InstructionSequence.compile(File.read(path), path, path)
  rescue ScriptError => error
    failed = true
    $stderr.puts("#{path}: error: #{error.message}")
  end
end
exit(failed ? 1 : 0)
"""

CHECKERS = {"python": PYTHON, "javascript": JAVASCRIPT, "ruby": RUBY}
