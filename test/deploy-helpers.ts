import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

/** The Kubernetes base's folder. */
export const BASE_DIR = fileURLToPath(new URL('../deploy/kubernetes/', import.meta.url));

/** The parts of a manifest the tests read. */
export interface Manifest {
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly spec?: Record<string, unknown>;
  readonly data?: Record<string, string>;
}

/** A container of a Deployment's pod template, as far as the tests read it. */
export interface Container {
  readonly name: string;
  readonly image: string;
  readonly args: string[];
  readonly env?: { name: string; value: string }[];
  readonly ports?: { name: string; containerPort: number }[];
  readonly livenessProbe?: { httpGet: { path: string; port: string | number } };
  readonly readinessProbe?: { httpGet: { path: string; port: string | number } };
  readonly volumeMounts?: { name: string; mountPath: string }[];
  readonly securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
}

/** Parses a YAML stream of manifests. */
export function parseManifests(text: string): Manifest[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Manifest | null)
    .filter((m): m is Manifest => m !== null);
}

/** The base's manifests as written (no kustomize transformations): the Deployments' args are the daemons' command lines. */
export function baseManifests(): Manifest[] {
  const kustomization = parseManifests(readFileSync(`${BASE_DIR}kustomization.yaml`, 'utf8'))[0] as unknown as { resources: string[] };
  return kustomization.resources.flatMap((file) => parseManifests(readFileSync(`${BASE_DIR}${file}`, 'utf8')));
}

/** The one container of a Deployment. */
export function containerOf(deployment: Manifest): Container {
  const spec = deployment.spec as { template: { spec: { containers: Container[] } } };
  const containers = spec.template.spec.containers;
  if (containers.length !== 1) throw new Error(`${deployment.metadata.name}: expected one container, found ${containers.length}`);
  return containers[0]!;
}

/** The base's settings file (the ConfigMap's butterfly.json). */
export function baseConfig(): Record<string, unknown> {
  return JSON.parse(readFileSync(`${BASE_DIR}butterfly.json`, 'utf8')) as Record<string, unknown>;
}
