/**
 * `@aranya/arhat`: the agent on each device. It runs pods on Docker or Podman
 * and answers aranya over the device link; `main.ts` is the program. Its parts
 * are imported by path through this package's exports
 * (`@aranya/arhat/connectivity/websocket/ws_link_dialer`) by the tests and
 * benches of other packages. The architecture is in docs/arhat.md.
 *
 * @module
 */
export {};
