/** The load balancer of one stage: queues jobs and hands them to the stage's workers. */
export { Proxy, PROXY_DEFAULTS, type ProxyOptions, type ProxyStats } from './proxy.js';
