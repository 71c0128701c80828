# syntax=docker/dockerfile:1
# One image for every role; the command picks it (api, syncer, migrate).
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY api ./api
COPY syncer ./syncer
COPY lib ./lib
COPY scripts ./scripts
COPY migrations ./migrations
USER node
EXPOSE 3333
CMD ["node", "--import", "tsx", "api/main.ts"]
