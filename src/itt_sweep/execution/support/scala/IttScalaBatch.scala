// Compiles a batch of MBXP Scala programs in one JVM, settling compile errors round by round.
//
// Called as `IttScalaBatch <out dir> <source>...` (sandboxed, like scalac). scalac stops a call at the first
// phase that reports an error and then writes no class file at all, so one broken program keeps every other
// program of its batch from compiling: parser errors surface in a first call, type errors in a second, and
// only a third call writes classes. Paying a cold compiler JVM per call made those rounds most of the cost;
// here each round is a fresh compiler instance (no state carried over) in the same warm JVM.
//
// Each round drops the files its errors are located in and compiles the rest again, until a round has no
// error: exactly the files of that last round are compiled, as if each had been compiled in a clean call.
// Errors are printed as scalac prints them (`<source>:<line>: error: <message>`) for the caller to attribute.
// Exit status 0: every file is compiled or has its errors printed; 2: an error with no file position (the
// caller then splits the batch); 3: bad settings.
package itt

import java.io.File

import scala.tools.nsc.{Global, Settings}
import scala.tools.nsc.reporters.StoreReporter

object IttScalaBatch {
  def main(args: Array[String]): Unit = {
    var files = args.drop(1).toList
    while (files.nonEmpty) {
      val reporter = new StoreReporter
      val global = new Global(settings(args(0)), reporter)
      new global.Run().compile(files)
      if (!reporter.hasErrors) sys.exit(0)
      val errors = reporter.infos.toList.filter(_.severity == reporter.ERROR)
      val unlocated = errors.filterNot(_.pos.isDefined)
      if (unlocated.nonEmpty) {
        unlocated.foreach(info => println("error: " + info.msg))
        sys.exit(2)
      }
      val broken = errors.map(info => canonical(info.pos.source.file.path)).toSet
      val (failed, rest) = files.partition(file => broken.contains(canonical(file)))
      for (file <- failed; info <- errors if canonical(info.pos.source.file.path) == canonical(file))
        println(s"$file:${info.pos.line}: error: ${info.msg}")
      if (failed.isEmpty) sys.exit(2) // errors in files we did not pass: nothing to drop, no progress
      files = rest
    }
    sys.exit(0)
  }

  private def settings(out: String): Settings = {
    val settings = new Settings(message => { println("error: " + message); sys.exit(3) })
    settings.usejavacp.value = true
    settings.nowarn.value = true
    settings.outdir.value = out
    settings
  }

  private def canonical(path: String): String = new File(path).getCanonicalPath
}
