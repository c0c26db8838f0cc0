import { MultikernelError } from '../errors';
import type { Fdt, FdtNode, FdtProperty } from './types';

/** Node names dtc accepts without an error: base name, optional unit address. */
export const NODE_NAME = /^[A-Za-z0-9,._+-]+(@[A-Za-z0-9,._+-]*)?$/;
/** Property names dtc accepts without an error. */
export const PROP_NAME = /^[A-Za-z0-9,._+*#?-]+$/;
const DIRECTIVE_NAME = /^#(include|define|undef|if|ifdef|ifndef|elif|else|endif|error|warning|pragma|line)$/;

/** Property names that read as preprocessor directives (`#include`); printed with dtc's '\' escape. */
export function looksLikeDirective(name: string): boolean {
  return DIRECTIVE_NAME.test(name);
}

const ESCAPES: Record<number, string> = { 7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 34: '\\"', 92: '\\\\' };

/** A value dtc would print as strings: printable ASCII segments, each NUL-terminated, none empty. */
function isStringList(v: Uint8Array): boolean {
  if (v.length === 0 || v[v.length - 1] !== 0 || v[0] === 0) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c === 0 ? v[i - 1] === 0 : (c < 0x20 || c > 0x7e) && (c < 7 || c > 13)) return false;
  }
  return true;
}

function renderStrings(v: Uint8Array): string {
  const parts: string[] = [];
  let s = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c === 0) {
      parts.push(`"${s}"`);
      s = '';
    } else {
      s += ESCAPES[c] ?? String.fromCharCode(c);
    }
  }
  return parts.join(', ');
}

function renderValue(v: Uint8Array): string {
  if (isStringList(v)) return renderStrings(v);
  if (v.length % 4 === 0) {
    const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
    const cells: string[] = [];
    for (let i = 0; i < v.length; i += 4) cells.push(`0x${view.getUint32(i).toString(16).padStart(2, '0')}`);
    return `<${cells.join(' ')}>`;
  }
  return `[${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex').replace(/(..)(?!$)/g, '$1 ')}]`;
}

function propLine(p: FdtProperty, path: string): string {
  if (!PROP_NAME.test(p.name)) {
    throw new MultikernelError('ERR_MK_INVALID_FDT', `cannot print ${path}: property name ${JSON.stringify(p.name)} is not valid DTS`, { details: { path } });
  }
  const name = looksLikeDirective(p.name) ? `\\${p.name}` : p.name;
  return p.value.length === 0 ? `${name};` : `${name} = ${renderValue(p.value)};`;
}

function printNode(n: FdtNode, path: string, indent: string, out: string[]): void {
  const inner = `${indent}\t`;
  for (const p of n.properties) out.push(inner + propLine(p, path));
  for (const c of n.children) {
    const childPath = path === '/' ? `/${c.name}` : `${path}/${c.name}`;
    if (!NODE_NAME.test(c.name)) {
      throw new MultikernelError('ERR_MK_INVALID_FDT', `cannot print ${childPath}: node name ${JSON.stringify(c.name)} is not valid DTS`, { details: { path: childPath } });
    }
    out.push(`${inner}${c.name} {`);
    printNode(c, childPath, inner, out);
    out.push(`${inner}};`);
  }
}

/**
 * Render a tree as DTS source that dtc compiles back to the same tree. Values are shown as
 * strings, cells or bytes by dtc's heuristics; reservations become /memreserve/ lines. The
 * header's boot CPU id has no DTS syntax (dtc takes it as `-b`) and is not printed.
 */
export function printDts(tree: Fdt, options: { plugin?: boolean } = {}): string {
  const out = ['/dts-v1/;'];
  if (options.plugin === true) out.push('/plugin/;');
  out.push('');
  for (const r of tree.reservations) {
    out.push(`/memreserve/ 0x${r.address.toString(16).padStart(16, '0')} 0x${r.size.toString(16).padStart(16, '0')};`);
  }
  if (tree.reservations.length > 0) out.push('');
  out.push('/ {');
  printNode(tree.root, '/', '', out);
  out.push('};', '');
  return out.join('\n');
}
