# syntax=docker/dockerfile:1
# One image, three roles (docker/entrypoint.sh):
#   docker run refit            # all: the API and a worker beside it, like npm start
#   docker run refit api        # the API only (REFIT_ROLE=api); scale workers separately
#   docker run refit worker     # a worker only (WORKER_RESOURCE_CLASS=cpu consumes `training`)
# Multi-stage: the build stage has compilers and dev dependencies; the runtime stage has neither and runs
# as the unprivileged `refit` user. The GPU worker image is docker/Dockerfile.gpu.
FROM node:20-bookworm AS build
WORKDIR /app
# The addon links libtensorflow by absolute path: build it where the runtime stage will have it.
ENV REFIT_ENGINE_CACHE=/app/.cache/libtensorflow
# python3-pip fetches the tensorflow-cpu wheel when libtensorflow's own download is unreachable.
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip unzip && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json .npmrc ./
COPY scripts ./scripts
COPY prisma ./prisma
COPY prisma.config.ts ./
RUN npm ci
COPY . .
RUN npm run build && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 STORAGE_DIR=/data
WORKDIR /app
RUN groupadd --system refit && useradd --system --gid refit --home /app refit && mkdir -p /data && chown refit:refit /data
COPY --from=build --chown=refit:refit /app/package.json ./
COPY --from=build --chown=refit:refit /app/node_modules ./node_modules
COPY --from=build --chown=refit:refit /app/dist ./dist
COPY --from=build --chown=refit:refit /app/src/builtin-models ./src/builtin-models
# the admin dashboard's static files are served from the source tree (tsc does not copy them)
COPY --from=build --chown=refit:refit /app/src/dashboard/static ./src/dashboard/static
COPY --from=build --chown=refit:refit /app/prisma ./prisma
# tfjs-node's addon links libtensorflow from this path (REFIT_ENGINE_CACHE in the build stage)
COPY --from=build --chown=refit:refit /app/.cache ./.cache
COPY --chown=refit:refit docker/entrypoint.sh docker/healthcheck.mjs ./docker/
USER refit
EXPOSE 8080
VOLUME ["/data"]
# api/all: GET /healthz answers; worker: its registry heartbeat reached Redis (docker/healthcheck.mjs)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["node", "docker/healthcheck.mjs"]
ENTRYPOINT ["/bin/sh", "docker/entrypoint.sh"]
CMD ["all"]
