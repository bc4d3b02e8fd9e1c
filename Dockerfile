# siot in a container: `siot serve` with its data in the volume /data.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t siot .
#   docker run -v siot-data:/data -v "$PWD/tls:/tls:ro" -p 4222:4222 siot
#
# The NATS listener binds 0.0.0.0:4222 so that other containers and hosts
# reach it, and siot refuses a listener other than loopback without TLS.
# This image therefore serves TLS by default, with the certificate and key
# mounted at /tls (cert.pem, key.pem): without them it exits at once,
# naming the missing file. To run without TLS (a private network, or a
# proxy in front that terminates TLS), replace the TLS arguments with
# --insecure, which siot logs at every start:
#
#   docker run -v siot-data:/data -p 4222:4222 siot --insecure
#
# HTTP (/healthz, /readyz, /status, /metrics) listens on 0.0.0.0:8118
# without authentication: publish it only where its readers may see the
# status (docs/operations.md, "Containers"). The administrator's
# credentials are written to /data/admin.creds on first start.
#
# TestDockerfile (cmd/siot) checks what can be checked without Docker: a
# non-root user, the volume, the build flags of the Makefile, and serve
# flags that exist.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
# The flags of the Makefile's build: static, no local paths, no symbols.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.stampedVersion=${VERSION}" -o /out/siot ./cmd/siot \
	&& mkdir -p /out/data

# distroless/static: CA certificates, /etc/passwd with the user nonroot
# (65532), tzdata; no shell, no libc (the binary is static).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/siot /siot
# The volume's mount point, owned by the user siot runs as: a new named
# volume takes the ownership of the image's directory.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME /data
EXPOSE 4222 8118
ENTRYPOINT ["/siot", "serve", "--data", "/data", "--listen", "0.0.0.0:4222", "--http", "0.0.0.0:8118"]
CMD ["--tls-cert", "/tls/cert.pem", "--tls-key", "/tls/key.pem"]
