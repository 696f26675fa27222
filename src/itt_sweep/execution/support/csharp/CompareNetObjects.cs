// A small stand-in for the NuGet library KellermanSoftware.CompareNetObjects, which the MBXP C# tests
// (MBCSP) call as `new CompareLogic().Compare(actual, expected).AreEqual`. Built once by itt_sweep into the
// toolchain directory (execution/toolchains.py); the tests compile against it unchanged.
//
// Semantics follow the library's defaults where the tests can tell: values of different runtime types are
// different (an int is not a long), lists and arrays compare element by element in order, doubles and floats
// compare exactly, strings ordinally, null equals only null; classes and structs compare their public
// properties and fields. Two deliberate differences: dictionaries compare as maps (every key of one has an
// equal key, with an equal value, in the other; the library walks both in insertion order) and sets compare
// without regard to order.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;

namespace KellermanSoftware.CompareNetObjects
{
    public class ComparisonConfig
    {
        public int MaxDifferences = 1;
        public bool IgnoreCollectionOrder = false;
        public bool IgnoreObjectTypes = false;
        public double DoublePrecision = 0;
    }

    public class Difference
    {
        public string PropertyName = "";
        public string Object1Value = "";
        public string Object2Value = "";
        public override string ToString()
        {
            return "Types or values differ at " + (PropertyName == "" ? "the root" : PropertyName)
                + ": " + Object1Value + " != " + Object2Value;
        }
    }

    public class ComparisonResult
    {
        public List<Difference> Differences = new List<Difference>();
        public bool AreEqual { get { return Differences.Count == 0; } }
        public string DifferencesString { get { return string.Join("\n", Differences); } }
    }

    public class CompareLogic
    {
        private const int MaxDepth = 64;
        public ComparisonConfig Config = new ComparisonConfig();

        public CompareLogic() { }
        public CompareLogic(ComparisonConfig config) { Config = config; }

        public ComparisonResult Compare(object expected, object actual)
        {
            var result = new ComparisonResult();
            if (!Same(expected, actual, 0))
            {
                result.Differences.Add(new Difference {
                    Object1Value = Show(expected), Object2Value = Show(actual) });
            }
            return result;
        }

        private static string Show(object value)
        {
            if (value == null) return "null";
            if (value is string) return "\"" + value + "\"";
            var items = value as IEnumerable;
            if (items != null) return "[" + string.Join(", ", items.Cast<object>().Select(Show)) + "]";
            return value.ToString();
        }

        private bool Same(object a, object b, int depth)
        {
            if (a == null || b == null) return a == null && b == null;
            if (ReferenceEquals(a, b)) return true;
            if (depth > MaxDepth) return false;
            Type type = a.GetType();
            if (!Config.IgnoreObjectTypes && type != b.GetType()) return false;
            if (a is double || a is float) return SameFloat(Convert.ToDouble(a), b);
            if (a is string || type.IsPrimitive || type.IsEnum || a is decimal || a is DateTime)
                return a.Equals(b) || (Config.IgnoreObjectTypes && IsNumber(a) && IsNumber(b)
                                       && Convert.ToDecimal(a) == Convert.ToDecimal(b));
            if (a is IDictionary && b is IDictionary) return SameMap((IDictionary)a, (IDictionary)b, depth);
            if (IsSet(type) && b is IEnumerable) return SameBag((IEnumerable)a, (IEnumerable)b, depth);
            if (a is IEnumerable && b is IEnumerable)
            {
                if (Config.IgnoreCollectionOrder) return SameBag((IEnumerable)a, (IEnumerable)b, depth);
                return SameSequence((IEnumerable)a, (IEnumerable)b, depth);
            }
            return SameMembers(a, b, depth);
        }

        private bool SameFloat(double a, object other)
        {
            if (!IsNumber(other)) return false;
            double b = Convert.ToDouble(other);
            if (double.IsNaN(a) || double.IsNaN(b)) return double.IsNaN(a) && double.IsNaN(b);
            return Config.DoublePrecision > 0 ? Math.Abs(a - b) <= Config.DoublePrecision : a == b;
        }

        private static bool IsNumber(object value)
        {
            return value is sbyte || value is byte || value is short || value is ushort || value is int
                || value is uint || value is long || value is ulong || value is float || value is double
                || value is decimal;
        }

        private static bool IsSet(Type type)
        {
            return type.GetInterfaces().Any(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(ISet<>));
        }

        private bool SameSequence(IEnumerable a, IEnumerable b, int depth)
        {
            var left = a.Cast<object>().ToList();
            var right = b.Cast<object>().ToList();
            if (left.Count != right.Count) return false;
            for (int i = 0; i < left.Count; i++)
            {
                if (!Same(left[i], right[i], depth + 1)) return false;
            }
            return true;
        }

        private bool SameBag(IEnumerable a, IEnumerable b, int depth)
        {
            var left = a.Cast<object>().ToList();
            var right = b.Cast<object>().ToList();
            if (left.Count != right.Count) return false;
            var used = new bool[right.Count];
            foreach (var item in left)
            {
                int match = -1;
                for (int j = 0; j < right.Count && match < 0; j++)
                {
                    if (!used[j] && Same(item, right[j], depth + 1)) match = j;
                }
                if (match < 0) return false;
                used[match] = true;
            }
            return true;
        }

        private bool SameMap(IDictionary a, IDictionary b, int depth)
        {
            if (a.Count != b.Count) return false;
            var rightKeys = b.Keys.Cast<object>().ToList();
            var used = new bool[rightKeys.Count];
            foreach (DictionaryEntry entry in a)
            {
                int match = -1;
                for (int j = 0; j < rightKeys.Count && match < 0; j++)
                {
                    if (!used[j] && Same(entry.Key, rightKeys[j], depth + 1)) match = j;
                }
                if (match < 0 || !Same(entry.Value, b[rightKeys[match]], depth + 1)) return false;
                used[match] = true;
            }
            return true;
        }

        private bool SameMembers(object a, object b, int depth)
        {
            const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance;
            Type type = a.GetType();
            if (type != b.GetType()) return a.Equals(b);
            foreach (var field in type.GetFields(flags))
            {
                if (!Same(field.GetValue(a), field.GetValue(b), depth + 1)) return false;
            }
            foreach (var property in type.GetProperties(flags))
            {
                if (property.GetIndexParameters().Length > 0 || !property.CanRead) continue;
                if (!Same(property.GetValue(a, null), property.GetValue(b, null), depth + 1)) return false;
            }
            return true;
        }
    }
}
