/**
 * `@aranya/proto`: the aranya <-> arhat wire contract, the `.proto` files and
 * the TypeScript protobuf-es generates from them into `gen/` (never edited by
 * hand; `deno task proto`). Other packages import the generated modules by
 * path through this package's exports: `@aranya/proto/gen/aranya/pod_pb`.
 *
 * @module
 */
export {};
