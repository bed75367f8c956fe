# syntax=docker/dockerfile:1
# The spoke image (wormhole-client). Build from the repository root:
#   docker build -f docker/client.Dockerfile -t wormhole-client .
# One process per pod does everything: pairing, sync, Kubernetes watch, L4 proxying, and its own WireGuard interface
# (kernel module when the node has it, else wireguard-go on /dev/net/tun) — hence wireguard-tools, wireguard-go and
# iproute2, and no nginx. CI cannot run Docker here: Wormhole.Tunnel.Chart.Tests replays this file's build stage
# (its COPY and RUN lines) in a temporary directory and starts the published executable.

FROM mcr.microsoft.com/dotnet/sdk:10.0-trixie AS build
WORKDIR /src
# Restore first, from the project files only, so source edits keep the restored layer.
COPY Directory.Build.props Directory.Packages.props .editorconfig ./
COPY src/Shared/Wormhole.Tunnel.Shared.csproj src/Shared/
COPY src/Client/Wormhole.Tunnel.Client.csproj src/Client/
RUN dotnet restore src/Client/Wormhole.Tunnel.Client.csproj
COPY src/Shared/ src/Shared/
COPY src/Client/ src/Client/
# The image runs on the ASP.NET Core runtime (JIT); scripts/publish-aot makes the NativeAOT executables.
RUN dotnet publish src/Client/Wormhole.Tunnel.Client.csproj -c Release -p:PublishAot=false -o /out

FROM mcr.microsoft.com/dotnet/aspnet:10.0-trixie-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wireguard-tools wireguard-go iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out /app
WORKDIR /app
# Root, because the process manages WireGuard: the chart drops every capability but NET_ADMIN, forbids privilege
# escalation and mounts the root filesystem read-only (/tmp, /storage and /var/run/wireguard are volumes).
USER 0:0
# The base image's ASPNETCORE_HTTP_PORTS=8080 would collide with the pairing port; every listener is set by flags.
ENV ASPNETCORE_HTTP_PORTS=
EXPOSE 8082/tcp 8090/tcp
VOLUME ["/storage"]
ENTRYPOINT ["/app/wormhole-client"]
