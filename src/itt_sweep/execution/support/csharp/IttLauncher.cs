// Runs one program out of a batch-compiled library: `mono IttLauncher.exe batch.dll <namespace>` calls the
// static Main of the one type under <namespace> that has it. itt_sweep compiles many C# programs with one
// `mcs -target:library` call, each wrapped in its own namespace, so one DLL holds many entry points.
// An exception from Main is rethrown unchanged, so the runtime reports it and exits 1 exactly as if the
// program had been compiled as its own executable.
using System;
using System.Linq;
using System.Reflection;
using System.Runtime.ExceptionServices;

public static class IttLauncher
{
    public static int Main(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("usage: IttLauncher.exe <assembly.dll> <namespace> [args...]");
            return 2;
        }
        Assembly assembly = Assembly.LoadFrom(args[0]);
        string space = args[1];
        Type[] types;
        try { types = assembly.GetTypes(); }
        catch (ReflectionTypeLoadException e) { types = e.Types.Where(t => t != null).ToArray(); }
        const BindingFlags flags = BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic;
        var mains = types
            .Where(t => t.Namespace == space || (t.Namespace ?? "").StartsWith(space + "."))
            .Select(t => t.GetMethod("Main", flags, null, new[] { typeof(string[]) }, null)
                         ?? t.GetMethod("Main", flags, null, Type.EmptyTypes, null))
            .Where(m => m != null)
            .ToList();
        if (mains.Count != 1)
        {
            Console.Error.WriteLine("error CS5001: the program has " + mains.Count
                                    + " static Main methods; exactly one is needed");
            return 1;
        }
        MethodInfo main = mains[0];
        object[] call = main.GetParameters().Length == 0
            ? new object[0] : new object[] { args.Skip(2).ToArray() };
        try
        {
            object returned = main.Invoke(null, call);
            return returned is int ? (int)returned : 0;
        }
        catch (TargetInvocationException e)
        {
            ExceptionDispatchInfo.Capture(e.InnerException).Throw();
            throw;
        }
    }
}
