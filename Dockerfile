# The image deploy/kubernetes runs: butterflyd on Node 20, Debian 12 (glibc 2.36, which the
# uWebSockets.js build needs), as the unprivileged user 10001 on a read-only root.
#   docker build -t butterfly:0.1.0 .
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY bin ./bin
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["node", "/app/bin/butterflyd.js"]
