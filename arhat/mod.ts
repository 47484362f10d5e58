/**
 * arhat, the agent on each device: runs pods on Docker or Podman and answers
 * aranya over the device link. Arrives with later work; nothing is exported yet.
 *
 * @module
 */
export {};
