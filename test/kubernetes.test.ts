import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readInvocation, type Settings } from '../dist/cli/settings.js';
import { BASE_DIR, type Container, type Manifest, containerOf, parseManifests } from './deploy-helpers.js';
import { tempDirs } from './helpers.js';

const tempDir = tempDirs('bf-k8s-');

function hasKubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; defaultMode?: number; items?: { key: string; path: string }[] };
  emptyDir?: object;
}

interface PodSpec {
  securityContext: { runAsNonRoot?: boolean; runAsUser?: number; fsGroup?: number };
  containers: Container[];
  volumes: Volume[];
}

interface ServiceSpec {
  selector: Record<string, string>;
  ports: { name: string; port: number; targetPort: string | number }[];
}

function podOf(deployment: Manifest): { labels: Record<string, string>; annotations: Record<string, string>; spec: PodSpec } {
  const template = (deployment.spec as { template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: PodSpec } }).template;
  return { labels: template.metadata.labels, annotations: template.metadata.annotations, spec: template.spec };
}

/** The address parts of `tcp://HOST:PORT`. */
function hostPort(address: string): { host: string; port: number } {
  const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(address);
  if (m === null) throw new Error(`not a tcp address: ${address}`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** The secret item a mounted file comes from: `{ secretName, key }`, or undefined when no secret volume holds the path. */
function secretItemAt(pod: PodSpec, container: Container, path: string): { secretName: string; key: string } | undefined {
  for (const mount of container.volumeMounts ?? []) {
    if (!path.startsWith(`${mount.mountPath}/`)) continue;
    const volume = pod.volumes.find((v) => v.name === mount.name);
    const item = volume?.secret?.items?.find((i) => i.path === path.slice(mount.mountPath.length + 1));
    if (volume?.secret !== undefined && item !== undefined) return { secretName: volume.secret.secretName, key: item.key };
  }
  return undefined;
}

/** The secret items under a mounted directory. */
function secretItemsIn(pod: PodSpec, container: Container, dir: string): { secretName: string; key: string }[] {
  const mount = (container.volumeMounts ?? []).find((m) => m.mountPath === dir);
  const volume = pod.volumes.find((v) => v.name === mount?.name);
  return (volume?.secret?.items ?? []).map((i) => ({ secretName: volume!.secret!.secretName, key: i.key }));
}

describe.skipIf(!hasKubectl())('the Kubernetes base (deploy/kubernetes)', () => {
  it('renders with kubectl kustomize, and every address, port, probe, setting and key reference in it is one the daemons accept and the other manifests provide', () => {
    const manifests = parseManifests(execFileSync('kubectl', ['kustomize', BASE_DIR], { encoding: 'utf8' }));
    const byKind = (kind: string): Manifest[] => manifests.filter((m) => m.kind === kind);
    const deployments = byKind('Deployment');
    const services = byKind('Service');
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(['butterfly-proxy-check', 'butterfly-proxy-parse', 'butterfly-server', 'butterfly-workers-check', 'butterfly-workers-parse']);
    const configMap = byKind('ConfigMap')[0]!;
    const configFile = join(tempDir(), 'butterfly.json');
    writeFileSync(configFile, configMap.data!['butterfly.json']!);
    const dockerUser = Number(/^USER (\d+)/m.exec(readFileSync(new URL('../Dockerfile', import.meta.url), 'utf8'))![1]);

    // Each daemon's command line as it reads it, with the ConfigMap's settings.
    const daemons = deployments.map((d) => {
      const container = containerOf(d);
      const pod = podOf(d);
      const configMount = container.volumeMounts!.find((m) => pod.spec.volumes.find((v) => v.name === m.name)?.configMap?.name === configMap.metadata.name);
      expect(configMount, `${d.metadata.name} mounts the ConfigMap`).toBeDefined();
      const configEnv = container.env!.find((e) => e.name === 'BUTTERFLY_CONFIG')!.value;
      expect(configEnv).toBe(`${configMount!.mountPath}/butterfly.json`);
      const invocation = readInvocation(container.args, { BUTTERFLY_CONFIG: configFile }, '/');
      return { deployment: d, container, pod, command: invocation.command, settings: invocation.settings as Settings };
    });

    // What a daemon binds is a port of its container; what it connects to is a Service's port
    // leading to the very socket it means (a worker to its stage's backend, a proxy's next to
    // the next stage's frontend, the server's stages to the frontends in order, ...).
    type Bound = 'loopback' | 'stats' | 'frontend' | 'backend';
    const bound = (s: Settings, command: string): [Bound, string][] =>
      (command === 'server' ? ([['loopback', s.loopback], ['stats', s.stats]] as const) : command === 'proxy' ? ([['frontend', s.frontend], ['backend', s.backend]] as const) : [])
        .filter((b): b is [Bound, string] => b[1] !== undefined);
    const wanted = (s: Settings, command: string): { address: string; socket: Bound; stage?: number }[] => {
      if (command === 'server') return (s.stages ?? []).map((address, stage) => ({ address, socket: 'frontend', stage }));
      if (command === 'proxy') {
        const out: { address: string; socket: Bound; stage?: number }[] = [{ address: s.loopback!, socket: 'loopback' }, { address: s.stats!, socket: 'stats' }];
        if (s.next !== undefined) out.push({ address: s.next, socket: 'frontend', stage: s.stageIndex! + 1 });
        return out;
      }
      return [{ address: s.connect!, socket: 'backend' }];
    };
    for (const d of daemons) {
      const ports = d.container.ports ?? [];
      for (const [, address] of bound(d.settings, d.command)) {
        const { host, port } = hostPort(address);
        expect(host, `${d.deployment.metadata.name} binds every interface`).toBe('0.0.0.0');
        expect(ports.map((p) => p.containerPort), `${d.deployment.metadata.name} declares port ${port}`).toContain(port);
      }
      for (const { address, socket, stage } of wanted(d.settings, d.command)) {
        const { host, port } = hostPort(address);
        const service = services.find((s) => s.metadata.name === host);
        expect(service, `${d.deployment.metadata.name} connects to ${address}: a Service named ${host}`).toBeDefined();
        const spec = service!.spec as unknown as ServiceSpec;
        const servicePort = spec.ports.find((p) => p.port === port);
        expect(servicePort, `Service ${host} has port ${port}`).toBeDefined();
        const target = daemons.find((t) => Object.entries(spec.selector).every(([k, v]) => t.pod.labels[k] === v));
        expect(target, `Service ${host} selects a Deployment`).toBeDefined();
        const containerPort = target!.container.ports!.find((p) => p.name === servicePort!.targetPort || p.containerPort === servicePort!.targetPort)!;
        const reached = bound(target!.settings, target!.command).find(([, a]) => hostPort(a).port === containerPort.containerPort)?.[0];
        expect(reached, `${d.deployment.metadata.name}: ${address} reaches the ${socket} socket`).toBe(socket);
        if (stage !== undefined) expect(target!.settings.stageIndex, `${address} is stage ${stage}'s proxy`).toBe(stage);
        if (d.command === 'worker') expect(target!.settings.name, `${d.deployment.metadata.name} joins its own stage's proxy`).toBe(d.settings.stage!.value);
      }
      if (d.command === 'server') expect(d.settings.port).toBe(ports.find((p) => p.name === 'http')!.containerPort);

      // Probes and scraping go to the admin port the daemon serves.
      const admin = ports.find((p) => p.name === 'admin')!;
      expect(admin.containerPort).toBe(d.settings.adminPort);
      expect(d.settings.adminHost).toBe('0.0.0.0');
      expect(d.container.livenessProbe!.httpGet).toEqual({ path: '/health', port: 'admin' });
      expect(d.container.readinessProbe!.httpGet).toEqual({ path: '/ready', port: 'admin' });
      expect(d.pod.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(d.settings.adminPort), 'prometheus.io/path': '/metrics' });

      // Non-root, read-only, as the image's user; /tmp writable for compiled stages.
      expect(d.pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: dockerUser });
      expect(d.container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
      expect(d.container.volumeMounts!.map((m) => m.mountPath)).toContain('/tmp');
      expect(d.container.image).toMatch(/^butterfly:/);
    }

    // Keys: every daemon has a secret key from the Secret; clients expect the key the servers hold; servers allow every client's key.
    const secretKey = (d: (typeof daemons)[number]): string => {
      const item = secretItemAt(d.pod.spec, d.container, d.settings.curveKey!.value);
      expect(item, `${d.deployment.metadata.name}: --curve-key ${d.settings.curveKey?.value} is a mounted Secret item`).toBeDefined();
      expect(item!.secretName).toBe('butterfly-curve');
      expect(item!.key).toMatch(/\.key_secret$/);
      return item!.key;
    };
    const serverSecret = new Set(daemons.filter((d) => d.command !== 'worker').map(secretKey));
    expect([...serverSecret]).toEqual(['pipeline.key_secret']);
    const clientPublic = new Set(daemons.map((d) => secretKey(d).replace(/_secret$/, '')));
    for (const d of daemons) {
      const serverKeyItem = d.settings.curveServerKey === undefined ? `${secretKey(d).replace(/_secret$/, '')}` : secretItemAt(d.pod.spec, d.container, d.settings.curveServerKey.value)?.key;
      expect(serverKeyItem, `${d.deployment.metadata.name} expects the servers' public key`).toBe('pipeline.key');
      if (d.command === 'worker') continue;
      const allowed = secretItemsIn(d.pod.spec, d.container, d.settings.curveAllow!.value).map((i) => i.key);
      expect(new Set(allowed), `${d.deployment.metadata.name} allows every client's key`).toEqual(clientPublic);
    }

    // Every worker Deployment is scaled by an autoscaler; every Service selects a Deployment.
    const scaled = byKind('HorizontalPodAutoscaler').map((h) => (h.spec as { scaleTargetRef: { name: string } }).scaleTargetRef.name);
    expect(scaled.sort()).toEqual(daemons.filter((d) => d.command === 'worker').map((d) => d.deployment.metadata.name).sort());
    for (const service of services) {
      const selector = (service.spec as unknown as ServiceSpec).selector;
      expect(daemons.some((t) => Object.entries(selector).every(([k, v]) => t.pod.labels[k] === v)), `Service ${service.metadata.name} selects a Deployment`).toBe(true);
    }
  });
});
