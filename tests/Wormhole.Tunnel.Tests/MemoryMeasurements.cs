namespace Wormhole.Tunnel.Tests;

/// <summary>
/// Tests that measure process-wide memory (GC.GetTotalMemory) run alone: any test class running beside them keeps
/// objects alive (1 MiB names, recorded logs, fixtures) and makes the measure fail for reasons of its own.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MemoryMeasurements
{
    public const string Name = "Memory measurements (run alone)";
}
