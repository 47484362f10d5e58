/**
 * The aranya <-> arhat wire contract: `.proto` files and the TypeScript that
 * protobuf-es generates from them into `gen/` (never edited by hand).
 * Filled in by the device-link work; nothing is exported yet.
 *
 * @module
 */
export {};
