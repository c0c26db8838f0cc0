/**
 * Flattened device tree toolkit: the FDT codec, tree builders and readers, and a DTS printer
 * and parser compatible with dtc. It knows nothing of multikernel.
 */
export * from './types';
export { decodeFdt, encodeFdt, type EncodeFdtOptions, DEFAULT_FDT_LIMITS, FDT_MAGIC, FDT_VERSION, FDT_LAST_COMP_VERSION } from './codec';
export { node, prop, getProperty, getChild, findNode, readU32, readU32s, readU64, readU64s, readString, readStrings } from './tree';
export { printDts } from './dts-print';
export { parseDts } from './dts-parse';
