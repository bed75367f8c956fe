using System.Security.Cryptography;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using Wormhole.Tunnel.Api;
using Wormhole.Tunnel.Pairing;
using Wormhole.Tunnel.State;

namespace Wormhole.Tunnel.Server;

/// <summary>One join token as the hub stores it: a hash of its secret (<see cref="JoinToken.Verifier"/>), never the secret.</summary>
internal sealed record StoredToken(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("name")] string? Name,
    [property: JsonPropertyName("verifier")] string Verifier,
    [property: JsonPropertyName("created")] DateTimeOffset Created,
    [property: JsonPropertyName("expires")] DateTimeOffset Expires,
    [property: JsonPropertyName("uses")] int Uses,
    [property: JsonPropertyName("used")] int Used,
    [property: JsonPropertyName("revoked")] bool Revoked,
    [property: JsonPropertyName("redeemed_by")] List<Redemption> RedeemedBy)
{
    public override string ToString() => $"StoredToken {{ Id = {Id}, Name = {Name}, Expires = {Expires:O}, Uses = {Uses}, Used = {Used}, Revoked = {Revoked} }}";
}

/// <summary>Who redeemed a token (a spoke asking again with the same name and key is answered without another use).</summary>
internal sealed record Redemption([property: JsonPropertyName("name")] string Name, [property: JsonPropertyName("public_key")] string PublicKey);

internal sealed record StoredTokens([property: JsonPropertyName("tokens")] List<StoredToken> Tokens);

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(StoredTokens))]
internal sealed partial class TokenJsonContext : JsonSerializerContext;

/// <summary>Why a token cannot pair this request.</summary>
internal enum TokenRefusal
{
    None,
    Unknown,
    Revoked,
    Expired,
    Exhausted,
    OtherName,
    Replayed,
    ClockSkew,
    ReplayCacheFull,
}

/// <summary>
/// The hub's join tokens (tokens.json, mode 0600, written atomically): issued through the admin API, redeemed by token
/// pairing. A redemption is reserved under a lock before the peer is paired and given back when pairing fails, so
/// concurrent redemptions of a token with <c>uses</c> N pair exactly N spokes. Nonces of authenticated requests are
/// remembered for the clock skew (<see cref="JoinPairing.MaxClockSkew"/>) on either side of their timestamp, so a
/// captured request cannot be sent again. Tokens that expired a day ago are dropped at the next write.
/// </summary>
internal sealed partial class JoinTokenStore(JsonStateFile<StoredTokens> file, TimeProvider time, ILogger<JoinTokenStore> logger) : IJoinTokenIssuer
{
    public const int MaxUses = 10_000;
    public const int MaxReplayEntries = 100_000;
    public static readonly TimeSpan MaxTtl = TimeSpan.FromDays(365);
    public static readonly TimeSpan DefaultTtl = TimeSpan.FromHours(1);
    private static readonly TimeSpan KeepExpired = TimeSpan.FromDays(1);

    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _writes = new(1, 1);
    private readonly Dictionary<string, DateTimeOffset> _nonces = new(StringComparer.Ordinal);
    private List<StoredToken> _tokens = [];
    private DateTimeOffset _nextNoncePrune;

    /// <summary>Where tokens send spokes and which hub key they pin; set by the hub at start.</summary>
    public Uri? PairingUrl { get; set; }

    public string? HubPublicKey { get; set; }

    public void Load()
    {
        var stored = file.Read();
        lock (_lock)
        {
            _tokens = stored?.Tokens?.Where(t => t is not null && JoinToken.IsValidId(t.Id) && t.Verifier is not null).ToList() ?? [];
        }
    }

    public async Task<IssuedToken> CreateAsync(TokenCreateRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var token = JoinToken.Create(PairingUrl ?? throw new InvalidOperationException("PairingUrl is not set"), HubPublicKey ?? throw new InvalidOperationException("HubPublicKey is not set"));
        var now = time.GetUtcNow();
        var stored = new StoredToken(token.Id, request.Name, Convert.ToBase64String(token.Verifier), now, now + request.Ttl, request.Uses, 0, false, []);
        await _writes.WaitAsync(cancellationToken);
        try
        {
            List<StoredToken> updated;
            lock (_lock)
            {
                updated = [.. _tokens.Where(t => now - t.Expires < KeepExpired), stored];
            }

            await file.WriteAsync(new StoredTokens(updated), CancellationToken.None);
            lock (_lock)
            {
                _tokens = [.. _tokens.Where(t => now - t.Expires < KeepExpired && t.Id != stored.Id), stored];
            }
        }
        finally
        {
            _writes.Release();
        }

        LogCreated(token.Id, request.Name ?? "(any)", request.Uses, stored.Expires);
        return new IssuedToken(token.Id, token.Encode(), stored.Expires, request.Uses, request.Name, JoinToken.FormatFingerprint(token.Fingerprint), token.PairingUrl.ToString());
    }

    public IReadOnlyList<TokenInfo> List()
    {
        var now = time.GetUtcNow();
        lock (_lock)
        {
            return _tokens.OrderBy(t => t.Created).Select(t => new TokenInfo(t.Id, t.Name, t.Created, t.Expires, t.Uses, t.Used, t.Revoked, t.Expires <= now)).ToList();
        }
    }

    public async Task<bool> RevokeAsync(string id, CancellationToken cancellationToken)
    {
        await _writes.WaitAsync(cancellationToken);
        try
        {
            List<StoredToken> updated;
            lock (_lock)
            {
                if (!_tokens.Any(t => t.Id == id))
                {
                    return false;
                }

                updated = _tokens.Select(t => t.Id == id ? t with { Revoked = true } : t).ToList();
            }

            await file.WriteAsync(new StoredTokens(updated), CancellationToken.None);
            lock (_lock)
            {
                _tokens = _tokens.Select(t => t.Id == id ? t with { Revoked = true } : t).ToList();
            }
        }
        finally
        {
            _writes.Release();
        }

        LogRevoked(id);
        return true;
    }

    /// <summary>The stored verifier of a token (unknown: null). Revoked and expired ones too: the request is authenticated before it is judged.</summary>
    public byte[]? VerifierOf(string id)
    {
        lock (_lock)
        {
            return _tokens.FirstOrDefault(t => t.Id == id) is { } t ? Convert.FromBase64String(t.Verifier) : null;
        }
    }

    /// <summary>
    /// Records the nonce of an authenticated request; refuses one seen before, a timestamp outside the clock skew, and
    /// (failing closed) a new nonce when the cache is full.
    /// </summary>
    public TokenRefusal CheckFresh(string id, string nonce, long timestamp)
    {
        var now = time.GetUtcNow();
        var at = DateTimeOffset.FromUnixTimeSeconds(Math.Clamp(timestamp, -62135596800L + 1, 253402300799L - 1));
        if ((now - at).Duration() > JoinPairing.MaxClockSkew)
        {
            return TokenRefusal.ClockSkew;
        }

        var key = id + "/" + nonce;
        lock (_lock)
        {
            if (now >= _nextNoncePrune || _nonces.Count >= MaxReplayEntries)
            {
                foreach (var (k, until) in _nonces.ToList())
                {
                    if (until < now)
                    {
                        _nonces.Remove(k);
                    }
                }

                _nextNoncePrune = now + TimeSpan.FromSeconds(30);
            }

            if (_nonces.ContainsKey(key))
            {
                return TokenRefusal.Replayed;
            }

            if (_nonces.Count >= MaxReplayEntries)
            {
                return TokenRefusal.ReplayCacheFull;
            }

            _nonces[key] = at + JoinPairing.MaxClockSkew;
        }

        return TokenRefusal.None;
    }

    /// <summary>
    /// Takes one use of the token for (name, key), or says why not. The same name and key that redeemed it before get
    /// a reservation that uses nothing (a spoke whose answer was lost asks again). Give it back with <see cref="Release"/>
    /// when pairing fails, or keep it with <see cref="CommitAsync"/>.
    /// </summary>
    public TokenRefusal TryReserve(string id, string name, string publicKey, out TokenReservation? reservation)
    {
        reservation = null;
        var now = time.GetUtcNow();
        lock (_lock)
        {
            var index = _tokens.FindIndex(t => t.Id == id);
            if (index < 0)
            {
                return TokenRefusal.Unknown;
            }

            var t = _tokens[index];
            if (t.Revoked)
            {
                return TokenRefusal.Revoked;
            }

            if (t.Expires <= now)
            {
                return TokenRefusal.Expired;
            }

            if (t.Name is not null && t.Name != name)
            {
                return TokenRefusal.OtherName;
            }

            if (t.RedeemedBy.Any(r => r.Name == name && r.PublicKey == publicKey))
            {
                reservation = new TokenReservation(id, name, publicKey, Counted: false);
                return TokenRefusal.None;
            }

            if (t.Used >= t.Uses)
            {
                return TokenRefusal.Exhausted;
            }

            _tokens[index] = t with { Used = t.Used + 1 };
            reservation = new TokenReservation(id, name, publicKey, Counted: true);
            return TokenRefusal.None;
        }
    }

    public void Release(TokenReservation reservation)
    {
        ArgumentNullException.ThrowIfNull(reservation);
        if (!reservation.Counted)
        {
            return;
        }

        lock (_lock)
        {
            var index = _tokens.FindIndex(t => t.Id == reservation.Id);
            if (index >= 0)
            {
                _tokens[index] = _tokens[index] with { Used = Math.Max(0, _tokens[index].Used - 1) };
            }
        }
    }

    /// <summary>Keeps the use and remembers who redeemed it; a write that fails is logged (the count in memory stays exact).</summary>
    public async Task CommitAsync(TokenReservation reservation)
    {
        ArgumentNullException.ThrowIfNull(reservation);
        if (!reservation.Counted)
        {
            return;
        }

        await _writes.WaitAsync(CancellationToken.None);
        try
        {
            List<StoredToken> snapshot;
            lock (_lock)
            {
                var index = _tokens.FindIndex(t => t.Id == reservation.Id);
                if (index >= 0)
                {
                    var t = _tokens[index];
                    _tokens[index] = t with { RedeemedBy = [.. t.RedeemedBy, new Redemption(reservation.Name, reservation.PublicKey)] };
                }

                snapshot = [.. _tokens];
            }

            try
            {
                await file.WriteAsync(new StoredTokens(snapshot), CancellationToken.None);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                LogWriteFailed(file.Path, ex.Message);
            }
        }
        finally
        {
            _writes.Release();
        }

        LogRedeemed(reservation.Id, reservation.Name);
    }

    /// <summary>A spoke rotated its key: a token it redeemed answers its new key again as its old one.</summary>
    public async Task KeyRotatedAsync(string name, string oldKey, string newKey)
    {
        await _writes.WaitAsync(CancellationToken.None);
        try
        {
            List<StoredToken> snapshot;
            lock (_lock)
            {
                if (!_tokens.Any(t => t.RedeemedBy.Any(r => r.Name == name && r.PublicKey == oldKey)))
                {
                    return;
                }

                _tokens = _tokens.Select(t => t with { RedeemedBy = t.RedeemedBy.Select(r => r.Name == name && r.PublicKey == oldKey ? r with { PublicKey = newKey } : r).ToList() }).ToList();
                snapshot = [.. _tokens];
            }

            try
            {
                await file.WriteAsync(new StoredTokens(snapshot), CancellationToken.None);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                LogWriteFailed(file.Path, ex.Message);
            }
        }
        finally
        {
            _writes.Release();
        }
    }

    /// <summary>Constant-time equality of a request's verifier with another (tests).</summary>
    internal static bool SameVerifier(byte[] a, byte[] b) => CryptographicOperations.FixedTimeEquals(a, b);

    [LoggerMessage(EventId = 2300, Level = LogLevel.Information, Message = "Issued join token {Id} for {Name}: {Uses} use(s), expires {Expires:O}")]
    private partial void LogCreated(string id, string name, int uses, DateTimeOffset expires);

    [LoggerMessage(EventId = 2301, Level = LogLevel.Information, Message = "Revoked join token {Id}")]
    private partial void LogRevoked(string id);

    [LoggerMessage(EventId = 2302, Level = LogLevel.Information, Message = "Join token {Id} redeemed by peer {Name}")]
    private partial void LogRedeemed(string id, string name);

    [LoggerMessage(EventId = 2303, Level = LogLevel.Error, Message = "Could not write {Path}: {Reason}; the token's use counts in this process stay exact")]
    private partial void LogWriteFailed(string path, string reason);
}

/// <summary>A use of a token held for one pairing (<see cref="Counted"/>: false when the same spoke asks again).</summary>
internal sealed record TokenReservation(string Id, string Name, string PublicKey, bool Counted);
