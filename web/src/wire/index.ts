// The wire format of siot in TypeScript: frames, point batches and the
// messages of the link protocol and the local API, byte for byte as
// transport/ writes them (testdata/wire/README.md).

export * from "./batch.ts";
export * from "./frame.ts";
export * from "./history.ts";
export * from "./messages.ts";
export * from "./msgpack.ts";
export * from "./repair.ts";
