# syntax=docker/dockerfile:1
# The hub image (wormhole-server): the NativeAOT executable, wg, wireguard-go, ip, OpenSSL and the CA certificates on an empty root
# (FROM scratch; no shell, no package manager). Two ways to build it, from the repository root:
#   docker build -f docker/server.Dockerfile -t wormhole-server .    public base images; the build stage publishes
#   sudo bash scripts/images                                          podman, a Debian base made with debootstrap and the
#                                                                     executables published before (no registry at all)
# One process per pod does everything: pairing, sync, Kubernetes watch, L4 proxying, and its own WireGuard interface
# (kernel module when the node has it, else wireguard-go on /dev/net/tun) — hence wireguard-tools, wireguard-go and
# iproute2, and no nginx. Wormhole.Tunnel.Chart.Tests replays the build stage's COPY and RUN lines (ImagePublishTests)
# and runs the image scripts/images builds from this file (ContainerTests, PodTests).

# The Debian the image's files come from, and the SDK that publishes (the same Debian release: the executable links
# against its glibc). scripts/images passes BASE=localhost/wormhole-base:bookworm.
ARG BASE=debian:trixie-slim
ARG SDK=mcr.microsoft.com/dotnet/sdk:10.0-trixie
# Where the executable comes from: "publish" (the stage below) or "prebuilt" (prebuilt/server/ of the build context:
# what scripts/publish-aot wrote, as scripts/images passes it).
ARG EXECUTABLE=publish

FROM ${SDK} AS publish
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Restore first, from the project files only, so source edits keep the restored layer.
COPY Directory.Build.props Directory.Packages.props .editorconfig ./
COPY src/Shared/Wormhole.Tunnel.Shared.csproj src/Shared/
COPY src/Server/Wormhole.Tunnel.Server.csproj src/Server/
RUN dotnet restore src/Server/Wormhole.Tunnel.Server.csproj -r linux-x64
COPY src/Shared/ src/Shared/
COPY src/Server/ src/Server/
# NativeAOT (the project sets PublishAot): one self-contained executable, no .NET runtime in the image.
RUN dotnet publish src/Server/Wormhole.Tunnel.Server.csproj -c Release -r linux-x64 --no-restore -o /out/server

FROM scratch AS prebuilt
COPY prebuilt/server/wormhole-server /out/server/wormhole-server

FROM ${EXECUTABLE} AS executable

FROM ${BASE} AS rootfs
COPY --from=executable /out/server/wormhole-server /usr/local/bin/wormhole-server
COPY docker/rootfs.sh /rootfs.sh
RUN sh /rootfs.sh /rootfs /usr/local/bin/wormhole-server

FROM scratch
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/usr/sbin
# Root, because the process manages WireGuard: the chart drops every capability but NET_ADMIN, forbids privilege
# escalation and mounts the root filesystem read-only (/tmp, /storage and /run/wireguard are volumes).
USER 0:0
EXPOSE 8080/tcp 8081/tcp 8082/tcp 8090/tcp 51820/udp
VOLUME ["/storage"]
ENTRYPOINT ["/usr/local/bin/wormhole-server"]
