# syntax=docker/dockerfile:1
# One image, two roles: `api` (default: API + its worker, like npm start) or `worker` (a worker only):
#   docker run refit            # npm start
#   docker run refit worker     # node dist/workers/worker.js
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
COPY --from=build --chown=refit:refit /app/prisma ./prisma
# tfjs-node's addon links libtensorflow from this path (REFIT_ENGINE_CACHE in the build stage)
COPY --from=build --chown=refit:refit /app/.cache ./.cache
USER refit
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = worker ]; then exec node dist/workers/worker.js; else exec node dist/src/main.js; fi", "--"]
CMD ["api"]
