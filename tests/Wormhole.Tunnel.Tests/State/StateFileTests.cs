using Wormhole.Tunnel.State;

namespace Wormhole.Tunnel.Tests.State;

public sealed class StateFileTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("wh-state-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public async Task Written_files_are_private_and_no_temp_file_is_left()
    {
        var state = new StateDirectory(_dir.FullName);
        await state.Keys.WriteAsync(new StoredKeys("priv", "pub"));
        File.GetUnixFileMode(state.Keys.Path).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        _dir.GetFiles().Select(f => f.Name).Should().Equal("keys.json");
        state.Keys.Read().Should().Be(new StoredKeys("priv", "pub"));
    }

    [Fact]
    public async Task Overwrite_replaces_the_whole_document()
    {
        var peers = new StateDirectory(_dir.FullName).Peers;
        await peers.WriteAsync(new StoredPeers([new StoredPeer("a", "10.188.0.2", "k1"), new StoredPeer("b", "10.188.0.3", "k2")]));
        await peers.WriteAsync(new StoredPeers([new StoredPeer("b", "10.188.0.3", "k2")]));
        peers.Read()!.Peers.Select(p => p.Name).Should().Equal("b");
    }

    [Fact]
    public void A_missing_file_reads_as_nothing()
    {
        new StateDirectory(_dir.FullName).PairingCache.Read().Should().BeNull();
    }

    [Fact]
    public async Task A_corrupt_file_is_reported_with_its_path_and_left_in_place()
    {
        var peers = new StateDirectory(_dir.FullName).Peers;
        await File.WriteAllTextAsync(peers.Path, "{\"peers\":[{\"name\":");
        var act = () => peers.Read();
        act.Should().Throw<StateCorruptException>().WithMessage($"*{peers.Path}*corrupt*");
        (await File.ReadAllTextAsync(peers.Path)).Should().Be("{\"peers\":[{\"name\":");
    }

    [Fact]
    public void Key_pair_text_never_shows_the_private_key()
    {
        new StoredKeys("very-private", "public").ToString().Should().NotContain("very-private");
    }
}
