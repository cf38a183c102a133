# Redis for the cluster demo (docker/compose.cluster.yaml): Debian's redis-server 7.0 on the same
# debian:bookworm-slim base as amihub's image, so the demo builds where no registry serves
# redis:7 (integration/docker/base-images.sh makes the base offline). Memory only, no persistence:
# amihub makes a new epoch when Redis comes back empty (README "Cluster").
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
# Reachable from the compose network only (no published port), hence no protected mode.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/tmp"]
