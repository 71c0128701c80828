# syntax=docker/dockerfile:1
# One image for every role; the command picks it (api, syncer, migrate).
# Node.js 24: an LTS release with support into 2028 (20 reached its end of life in April 2026).
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY api ./api
COPY syncer ./syncer
COPY lib ./lib
COPY scripts ./scripts
COPY tools/servers ./tools/servers
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
USER node
EXPOSE 3333 9464
CMD ["node", "dist/api/main.js"]
