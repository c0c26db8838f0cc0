import { MultikernelError } from '../errors';
import { resolveLimits } from './codec';
import { looksLikeDirective, NODE_NAME, PROP_NAME } from './dts-print';
import type { Fdt, FdtLimits, FdtNode, FdtReservation } from './types';

/** Deepest parenthesis/unary nesting accepted in an integer expression. */
const MAX_EXPR_DEPTH = 256;
const U64 = 0xffffffffffffffffn;

interface Label {
  name: string;
  pos: number;
}

/** A reference inside a value: a phandle cell (`<&lbl>`) or a path string (`&lbl`). */
interface Ref {
  kind: 'phandle' | 'path';
  ref: string;
  pos: number;
}

type Chunk = Uint8Array | Ref;

interface PProp {
  name: string;
  chunks: Chunk[];
  labels: Label[];
  deleted: boolean;
  pos: number;
}

/** A node while parsing: like dtc, deletions only mark entries, and a later definition revives them. */
interface PNode {
  name: string;
  props: PProp[];
  children: PNode[];
  propIndex: Map<string, PProp[]>;
  childIndex: Map<string, PNode[]>;
  labels: Label[];
  deleted: boolean;
  parent: PNode | undefined;
  /** levels of nodes in this subtree, itself included */
  height: number;
  phandle: number;
  pos: number;
}

function newNode(name: string, pos: number): PNode {
  return { name, props: [], children: [], propIndex: new Map(), childIndex: new Map(), labels: [], deleted: false, parent: undefined, height: 1, phandle: 0, pos };
}

function indexed<T>(index: Map<string, T[]>, name: string, item: T): void {
  const list = index.get(name);
  if (list === undefined) index.set(name, [item]);
  else list.push(item);
}

function addProp(n: PNode, p: PProp): void {
  n.props.push(p);
  indexed(n.propIndex, p.name, p);
}

function addChild(n: PNode, c: PNode): void {
  c.parent = n;
  n.children.push(c);
  indexed(n.childIndex, c.name, c);
}

function liveChild(n: PNode, name: string): PNode | undefined {
  return n.childIndex.get(name)?.find((c) => !c.deleted);
}

function deleteNode(n: PNode): void {
  n.deleted = true;
  n.labels = [];
  for (const p of n.props) {
    p.deleted = true;
    p.labels = [];
  }
  for (const c of n.children) deleteNode(c);
}

function depthOf(n: PNode): number {
  let d = 0;
  for (let p: PNode | undefined = n; p !== undefined; p = p.parent) d++;
  return d;
}

function pathOf(n: PNode): string {
  const parts: string[] = [];
  for (let p: PNode = n; p.parent !== undefined; p = p.parent) parts.push(p.name);
  return `/${parts.reverse().join('/')}`;
}

const ESCAPE_CHARS: Record<string, number> = { a: 7, b: 8, t: 9, n: 10, v: 11, f: 12, r: 13 };

/** Binary operators by precedence level, loosest first (C precedence, as in dtc). */
const BINARY_LEVELS: string[][] = [['||'], ['&&'], ['|'], ['^'], ['&'], ['==', '!='], ['<', '>', '<=', '>='], ['<<', '>>'], ['+', '-'], ['*', '/', '%']];
const OPERATOR = /\|\||&&|<<|>>|<=|>=|==|!=|[|^&<>+\-*/%?:]/y;

const STRING_RUN = /[^"\\]*/y;
const LINE_MARKER = /[ \t]+[0-9]/y;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*):/y;
const NAME = /(\\?)([A-Za-z0-9,._+*#?@-]+)/y;
const KEYWORD = /\/[A-Za-z0-9_-]+\//y;
const LITERAL = /(0[xX][0-9a-fA-F]+|[0-9]+)(U|L|UL|LL|ULL)?(?![A-Za-z0-9_])/y;
const BYTE = /[0-9a-fA-F]{2}/y;
const LABEL_REF = /&([A-Za-z_][A-Za-z0-9_]*)/y;
const PATH_REF = /&\{([A-Za-z0-9,._+*#?@/-]*)\}/y;

class DtsParser {
  private i = 0;
  private plugin = false;
  private nodes = 0;
  private fragments = 0;
  private root: PNode | undefined;
  private readonly reservations: FdtReservation[] = [];
  private readonly labelIndex = new Map<string, PNode[]>();
  private readonly limits: Required<FdtLimits>;

  constructor(
    private readonly src: string,
    private readonly fileName: string,
    limits: FdtLimits | undefined,
  ) {
    this.limits = resolveLimits(limits);
  }

  private fail(message: string, at = this.i, code: 'ERR_MK_DTS_SYNTAX' | 'ERR_MK_FDT_LIMIT' = 'ERR_MK_DTS_SYNTAX'): MultikernelError {
    let line = 1;
    let lineStart = 0;
    for (let p = this.src.indexOf('\n'); p !== -1 && p < at; p = this.src.indexOf('\n', p + 1)) {
      line++;
      lineStart = p + 1;
    }
    const column = at - lineStart + 1;
    return new MultikernelError(code, `${this.fileName}:${line}:${column}: ${message}`, { details: { fileName: this.fileName, line, column } });
  }

  /** Skip whitespace and both comment styles. */
  private skip(): void {
    const s = this.src;
    for (;;) {
      const c = s.charCodeAt(this.i);
      if (c === 32 || (c >= 9 && c <= 13)) this.i++;
      else if (c === 47 && s.charCodeAt(this.i + 1) === 42) {
        const end = s.indexOf('*/', this.i + 2);
        if (end === -1) throw this.fail('unterminated /* comment');
        this.i = end + 2;
      } else if (c === 47 && s.charCodeAt(this.i + 1) === 47) {
        const end = s.indexOf('\n', this.i);
        this.i = end === -1 ? s.length : end + 1;
      } else return;
    }
  }

  private describeHere(): string {
    return this.i >= this.src.length ? 'end of input' : JSON.stringify(this.src.slice(this.i, this.i + 12));
  }

  private expect(text: string): void {
    this.skip();
    if (!this.src.startsWith(text, this.i)) throw this.fail(`expected '${text}' but found ${this.describeHere()}`);
    this.i += text.length;
  }

  private match(re: RegExp): RegExpExecArray | null {
    re.lastIndex = this.i;
    const m = re.exec(this.src);
    if (m !== null) this.i = re.lastIndex;
    return m;
  }

  /** A `/keyword/` at the cursor (not consumed), or undefined. */
  private keyword(): string | undefined {
    KEYWORD.lastIndex = this.i;
    return KEYWORD.exec(this.src)?.[0];
  }

  private unsupported(): MultikernelError {
    const c = this.src[this.i];
    if (c === '#') return this.fail('preprocessor directives are not supported (run cpp first)');
    const kw = this.keyword();
    if (kw !== undefined) return this.fail(`${kw} is not supported here`);
    return this.fail(`unexpected ${this.describeHere()}`);
  }

  parse(): { fdt: Fdt; plugin: boolean } {
    if (this.src.length > this.limits.maxSize) {
      throw new MultikernelError('ERR_MK_FDT_LIMIT', `${this.fileName}: source of ${this.src.length} characters is larger than maxSize ${this.limits.maxSize}`);
    }
    this.skip();
    if (this.keyword() !== '/dts-v1/') throw this.fail(`expected '/dts-v1/;' but found ${this.describeHere()}`);
    for (;;) {
      this.skip();
      const kw = this.keyword();
      if (kw === '/dts-v1/') this.i += kw.length;
      else if (kw === '/plugin/') {
        this.i += kw.length;
        this.plugin = true;
      } else break;
      this.expect(';');
    }
    for (;;) {
      this.skip();
      const start = this.i;
      this.labels();
      if (this.keyword() !== '/memreserve/') {
        this.i = start;
        break;
      }
      this.i += '/memreserve/'.length;
      const address = this.primary(0);
      const size = this.primary(0);
      this.expect(';');
      // dtc writes 0/0 too, but as the block's terminator it reads back as nothing.
      if (address !== 0n || size !== 0n) this.reservations.push({ address, size });
    }
    for (;;) {
      this.skip();
      if (this.i >= this.src.length) break;
      this.topLevel();
    }
    if (this.root === undefined) throw this.fail('no root node (/ { ... };)');
    return { fdt: this.finish(this.root), plugin: this.plugin };
  }

  private topLevel(): void {
    const kw = this.keyword();
    if (kw === '/delete-node/') {
      this.i += kw.length;
      this.skip();
      const ref = this.reference();
      this.expect(';');
      deleteNode(this.resolve(ref));
      return;
    }
    if (this.src[this.i] === '/' && kw === undefined) {
      const pos = this.i++;
      const body = this.body('', pos, 1);
      this.expect(';');
      if (this.root === undefined) this.root = body;
      else this.merge(this.root, body);
      return;
    }
    const labels = this.labels();
    if (this.src[this.i] !== '&') throw this.unsupported();
    const ref = this.reference();
    const body = this.body('', ref.pos, 1);
    this.expect(';');
    body.labels.push(...labels);
    if (this.plugin && ref.ref.startsWith('/')) {
      // dtc's overlay sugar: `&{/path} { ... };` becomes a fragment aimed at that path.
      this.root ??= newNode('', ref.pos);
      const fragment = newNode(`fragment@${this.fragments++}`, ref.pos);
      this.countNode(ref.pos);
      addProp(fragment, { name: 'target-path', chunks: [utf8z(ref.ref)], labels: [], deleted: false, pos: ref.pos });
      body.name = '__overlay__';
      addChild(fragment, body);
      this.checkDepth(2 + body.height, ref.pos);
      addChild(this.root, fragment);
      return;
    }
    const target = this.resolve(ref);
    this.checkDepth(depthOf(target) - 1 + body.height, ref.pos);
    this.merge(target, body);
  }

  private countNode(pos: number): void {
    if (++this.nodes > this.limits.maxNodes) throw this.fail(`more than maxNodes ${this.limits.maxNodes} nodes`, pos, 'ERR_MK_FDT_LIMIT');
  }

  private checkDepth(depth: number, pos: number): void {
    if (depth > this.limits.maxDepth) throw this.fail(`nodes nested deeper than maxDepth ${this.limits.maxDepth}`, pos, 'ERR_MK_FDT_LIMIT');
  }

  /** Zero or more `label:` prefixes. */
  private labels(): Label[] {
    const out: Label[] = [];
    for (;;) {
      this.skip();
      const pos = this.i;
      const m = this.match(LABEL);
      if (m === null) return out;
      out.push({ name: m[1], pos });
    }
  }

  /** `&label` or `&{/path}` at the cursor. */
  private reference(): { ref: string; pos: number } {
    const pos = this.i;
    const m = this.match(PATH_REF) ?? this.match(LABEL_REF);
    if (m === null) throw this.fail(`expected '&label' or '&{/path}' but found ${this.describeHere()}`);
    if (m[0].startsWith('&{') && !m[1].startsWith('/')) throw this.fail(`path reference ${m[0]} is not absolute`, pos);
    return { ref: m[1], pos };
  }

  /** The live node a reference names, or a syntax error. */
  private resolve(ref: { ref: string; pos: number }): PNode {
    const target = this.root === undefined ? undefined : this.lookup(this.root, ref.ref);
    if (target === undefined) {
      const hint = this.plugin ? ' (references to labels outside a /plugin/ source need __fixups__, which are not supported)' : '';
      throw this.fail(`label or path ${ref.ref} not found${hint}`, ref.pos);
    }
    return target;
  }

  private lookup(root: PNode, ref: string): PNode | undefined {
    if (ref.startsWith('/')) {
      let n: PNode | undefined = root;
      for (const part of ref.split('/')) {
        if (part === '') continue; // dtc ignores empty components: '/a/', '/a//b'
        n = liveChild(n, part);
        if (n === undefined) return undefined;
      }
      return n;
    }
    return this.labelIndex.get(ref)?.find((n) => !n.deleted && n.labels.some((l) => l.name === ref));
  }

  private name(): { name: string; pos: number } {
    this.skip();
    const pos = this.i;
    const m = this.match(NAME);
    if (m === null) throw this.unsupported();
    if (m[1] === '' && (looksLikeDirective(m[2]) || (m[2] === '#' && this.match(LINE_MARKER) !== null))) throw this.fail('preprocessor directives are not supported (run cpp first)', pos);
    return { name: m[2], pos };
  }

  private propName(): { name: string; pos: number } {
    const n = this.name();
    if (!PROP_NAME.test(n.name)) throw this.fail(`invalid property name ${JSON.stringify(n.name)}`, n.pos);
    return n;
  }

  /** `{ ... }` of a node; `depth` is its level inside the statement (1 for the statement's node). */
  private body(name: string, pos: number, depth: number): PNode {
    this.countNode(pos);
    this.checkDepth(depth, pos);
    this.expect('{');
    const n = newNode(name, pos);
    const propsDone = (at: number): void => {
      if (n.children.length > 0) throw this.fail('properties must precede subnodes', at);
    };
    for (;;) {
      this.skip();
      if (this.src[this.i] === '}') {
        this.i++;
        return n;
      }
      const kw = this.keyword();
      if (kw === '/delete-property/') {
        propsDone(this.i);
        this.i += kw.length;
        const p = this.propName();
        this.expect(';');
        addProp(n, { name: p.name, chunks: [], labels: [], deleted: true, pos: p.pos });
        continue;
      }
      if (kw === '/delete-node/') {
        this.i += kw.length;
        const c = this.name();
        this.expect(';');
        const marker = newNode(c.name, c.pos);
        marker.deleted = true;
        addChild(n, marker);
        continue;
      }
      const labels = this.labels();
      const item = this.name();
      this.skip();
      const c = this.src[this.i];
      if (c === '{') {
        if (!NODE_NAME.test(item.name)) throw this.fail(`invalid node name ${JSON.stringify(item.name)}`, item.pos);
        const child = this.body(item.name, item.pos, depth + 1);
        this.expect(';');
        child.labels = labels;
        this.indexLabels(child);
        addChild(n, child);
        n.height = Math.max(n.height, child.height + 1);
        continue;
      }
      if (!PROP_NAME.test(item.name)) throw this.fail(`invalid property name ${JSON.stringify(item.name)}`, item.pos);
      propsDone(item.pos);
      let chunks: Chunk[] = [];
      if (c === '=') {
        this.i++;
        chunks = this.value();
      } else if (c !== ';') {
        throw this.fail(`expected '{', '=' or ';' after ${JSON.stringify(item.name)} but found ${this.describeHere()}`);
      }
      this.expect(';');
      addProp(n, { name: item.name, chunks, labels, deleted: false, pos: item.pos });
    }
  }

  private indexLabels(n: PNode): void {
    for (const l of n.labels) indexed(this.labelIndex, l.name, n);
  }

  /** dtc's merge_nodes: redefinitions replace in place and revive deleted entries. */
  private merge(old: PNode, add: PNode): void {
    old.deleted = false;
    old.labels.push(...add.labels);
    this.indexLabels(old);
    add.labels = [];
    for (const p of add.props) {
      if (p.deleted) {
        const live = old.propIndex.get(p.name)?.find((q) => !q.deleted);
        if (live !== undefined) {
          live.deleted = true;
          live.labels = [];
        }
        continue;
      }
      const same = old.propIndex.get(p.name)?.[0];
      if (same === undefined) addProp(old, p);
      else {
        same.chunks = p.chunks;
        same.deleted = false;
        same.labels.push(...p.labels);
        same.pos = p.pos;
      }
    }
    for (const c of add.children) {
      if (c.deleted) {
        const live = liveChild(old, c.name);
        if (live !== undefined) deleteNode(live);
        continue;
      }
      const same = old.childIndex.get(c.name)?.[0];
      if (same === undefined) addChild(old, c);
      else this.merge(same, c);
    }
  }

  /** A property value: comma-separated strings, cell arrays, byte strings and path references. */
  private value(): Chunk[] {
    const chunks: Chunk[] = [];
    for (;;) {
      this.labels();
      const c = this.src[this.i];
      if (c === '"') chunks.push(this.string());
      else if (c === '<') {
        this.i++;
        this.cells(32, chunks);
      } else if (c === '[') {
        this.i++;
        chunks.push(this.bytes());
      } else if (c === '&') {
        const ref = this.reference();
        chunks.push({ kind: 'path', ref: ref.ref, pos: ref.pos });
      } else if (this.keyword() === '/bits/') {
        this.i += '/bits/'.length;
        this.skip();
        const pos = this.i;
        const m = this.match(LITERAL);
        const bits = m === null ? NaN : Number(m[1]);
        if (bits !== 8 && bits !== 16 && bits !== 32 && bits !== 64) throw this.fail('/bits/ must be followed by 8, 16, 32 or 64', pos);
        this.expect('<');
        this.cells(bits, chunks);
      } else throw this.fail(`expected a property value but found ${this.describeHere()}`);
      this.labels();
      if (this.src[this.i] !== ',') return chunks;
      this.i++;
      this.skip();
    }
  }

  /** The cells of `<...>` after the '<'. */
  private cells(bits: number, chunks: Chunk[]): void {
    const width = bits / 8;
    const bytes: number[] = [];
    const flush = (): void => {
      chunks.push(Uint8Array.from(bytes));
      bytes.length = 0;
    };
    const mask = (1n << BigInt(bits)) - 1n;
    for (;;) {
      this.labels();
      const c = this.src[this.i];
      if (c === '>') {
        this.i++;
        flush();
        return;
      }
      if (c === '&') {
        const ref = this.reference();
        if (bits !== 32) throw this.fail('phandle references are only allowed in 32-bit cells', ref.pos);
        if (this.plugin) throw this.fail('phandle references in a /plugin/ source need __local_fixups__, which are not supported', ref.pos);
        flush();
        chunks.push({ kind: 'phandle', ref: ref.ref, pos: ref.pos });
        continue;
      }
      const pos = this.i;
      let v = this.primary(0);
      if (v > mask && (v | mask) !== U64) throw this.fail(`value out of range for a ${bits}-bit cell`, pos);
      v &= mask;
      for (let k = width - 1; k >= 0; k--) bytes.push(Number((v >> BigInt(8 * k)) & 0xffn));
    }
  }

  /** `[00 ff ...]` after the '['. */
  private bytes(): Uint8Array {
    const out: number[] = [];
    for (;;) {
      this.labels();
      if (this.src[this.i] === ']') {
        this.i++;
        return Uint8Array.from(out);
      }
      const m = this.match(BYTE);
      if (m === null) throw this.fail(`expected two hex digits or ']' but found ${this.describeHere()}`);
      out.push(parseInt(m[0], 16));
    }
  }

  /** One escape sequence after a backslash at `this.i` (dtc's get_escape_char), as bytes. */
  private escape(): Uint8Array {
    const s = this.src;
    const c = s[this.i];
    if (c >= '0' && c <= '7') {
      const m = /[0-7]{1,3}/y;
      m.lastIndex = this.i;
      const digits = (m.exec(s) as RegExpExecArray)[0];
      this.i += digits.length;
      return Uint8Array.of(parseInt(digits, 8) & 0xff);
    } else if (c === 'x') {
      const m = /[0-9a-fA-F]{1,2}/y;
      m.lastIndex = this.i + 1;
      const digits = m.exec(s);
      if (digits === null) throw this.fail('\\x used with no following hex digits', this.i - 1);
      this.i += 1 + digits[0].length;
      return Uint8Array.of(parseInt(digits[0], 16));
    } else if (c in ESCAPE_CHARS) {
      this.i++;
      return Uint8Array.of(ESCAPE_CHARS[c]);
    }
      const cp = s.codePointAt(this.i);
      if (cp === undefined) throw this.fail('unexpected end of input after \\');
      const ch = String.fromCodePoint(cp);
      this.i += ch.length;
      return Buffer.from(ch, 'utf8');
  }

  /** A quoted string at the cursor, as bytes with the NUL terminator. */
  private string(): Uint8Array {
    const s = this.src;
    const start = this.i++;
    const parts: Uint8Array[] = [];
    for (;;) {
      STRING_RUN.lastIndex = this.i;
      STRING_RUN.exec(s);
      parts.push(Buffer.from(s.slice(this.i, STRING_RUN.lastIndex), 'utf8'));
      this.i = STRING_RUN.lastIndex;
      const c = s[this.i++];
      if (c === '"') {
        parts.push(Uint8Array.of(0));
        return new Uint8Array(Buffer.concat(parts));
      }
      if (c === undefined) throw this.fail('unterminated string', start);
      parts.push(this.escape());
    }
  }

  /** A number, character literal or parenthesised expression. */
  private primary(depth: number): bigint {
    this.skip();
    if (depth > MAX_EXPR_DEPTH) throw this.fail(`expression nested deeper than ${MAX_EXPR_DEPTH}`, this.i, 'ERR_MK_FDT_LIMIT');
    const pos = this.i;
    const c = this.src[this.i];
    if (c === '(') {
      this.i++;
      const v = this.expression(depth + 1);
      this.expect(')');
      return v;
    }
    if (c === "'") {
      this.i++;
      const parts: Uint8Array[] = [];
      while (this.src[this.i] !== "'") {
        if (this.i >= this.src.length) throw this.fail('unterminated character literal', pos);
        const cp = this.src.codePointAt(this.i) as number;
        this.i += cp > 0xffff ? 2 : 1;
        parts.push(cp === 92 ? this.escape() : Buffer.from(String.fromCodePoint(cp), 'utf8'));
      }
      this.i++;
      const bytes = Buffer.concat(parts);
      if (bytes.length !== 1) throw this.fail(`character literal has ${bytes.length} bytes instead of 1`, pos);
      return BigInt(bytes[0]);
    }
    const m = this.match(LITERAL);
    if (m === null) throw this.fail(`expected a number but found ${this.describeHere()}`);
    const text = m[1];
    if (/^0[0-7]*[89]/.test(text)) throw this.fail(`invalid octal literal ${text}`, pos);
    const v = BigInt(text.length > 1 && text[0] === '0' && text[1] !== 'x' && text[1] !== 'X' ? `0o${text.slice(1)}` : text);
    if (v > U64) throw this.fail(`integer literal ${text} out of range`, pos);
    return v;
  }

  private operator(): string | undefined {
    this.skip();
    OPERATOR.lastIndex = this.i;
    return OPERATOR.exec(this.src)?.[0];
  }

  /** A C expression over unsigned 64-bit integers, as dtc evaluates it. */
  private expression(depth: number): bigint {
    const cond = this.binary(0, depth);
    if (this.operator() !== '?') return cond;
    this.i++;
    const a = this.expression(depth + 1);
    this.expect(':');
    const b = this.expression(depth + 1);
    return cond !== 0n ? a : b;
  }

  private binary(level: number, depth: number): bigint {
    if (level === BINARY_LEVELS.length) return this.unary(depth);
    let left = this.binary(level + 1, depth);
    for (;;) {
      const op = this.operator();
      if (op === undefined || !BINARY_LEVELS[level].includes(op)) return left;
      const pos = this.i;
      this.i += op.length;
      const right = this.binary(level + 1, depth);
      left = BigInt.asUintN(64, this.apply(op, left, right, pos));
    }
  }

  private apply(op: string, a: bigint, b: bigint, pos: number): bigint {
    const bool = (x: boolean): bigint => (x ? 1n : 0n);
    switch (op) {
      case '||': return bool(a !== 0n || b !== 0n);
      case '&&': return bool(a !== 0n && b !== 0n);
      case '|': return a | b;
      case '^': return a ^ b;
      case '&': return a & b;
      case '==': return bool(a === b);
      case '!=': return bool(a !== b);
      case '<': return bool(a < b);
      case '>': return bool(a > b);
      case '<=': return bool(a <= b);
      case '>=': return bool(a >= b);
      case '<<': return b < 64n ? a << b : 0n;
      case '>>': return b < 64n ? a >> b : 0n;
      case '+': return a + b;
      case '-': return a - b;
      case '*': return a * b;
      default:
        if (b === 0n) throw this.fail('division by zero', pos);
        return op === '/' ? a / b : a % b;
    }
  }

  private unary(depth: number): bigint {
    this.skip();
    const c = this.src[this.i];
    if (c === '-' || c === '~' || c === '!') {
      if (depth > MAX_EXPR_DEPTH) throw this.fail(`expression nested deeper than ${MAX_EXPR_DEPTH}`, this.i, 'ERR_MK_FDT_LIMIT');
      this.i++;
      const v = this.unary(depth + 1);
      return c === '-' ? BigInt.asUintN(64, -v) : c === '~' ? v ^ U64 : v === 0n ? 1n : 0n;
    }
    return this.primary(depth);
  }

  /** Resolve references like dtc (explicit phandles first, then in tree order) and build the tree. */
  private finish(root: PNode): Fdt {
    const used = new Set<number>();
    const walk = (n: PNode, visit: (n: PNode) => void): void => {
      visit(n);
      for (const c of n.children) if (!c.deleted) walk(c, visit);
    };
    walk(root, (n) => {
      for (const p of n.props) {
        if (p.deleted || (p.name !== 'phandle' && p.name !== 'linux,phandle')) continue;
        const v = p.chunks.length === 1 ? p.chunks[0] : undefined;
        if (!(v instanceof Uint8Array) || v.length !== 4) throw this.fail(`${p.name} must be a single 32-bit cell`, p.pos);
        const ph = new DataView(v.buffer, v.byteOffset, 4).getUint32(0);
        if (ph === 0 || ph === 0xffffffff) throw this.fail(`${p.name} value 0x${ph.toString(16)} is invalid`, p.pos);
        if (n.phandle !== 0 && n.phandle !== ph) throw this.fail(`${p.name} disagrees with the node's other phandle`, p.pos);
        if (n.phandle === 0 && used.has(ph)) throw this.fail(`duplicate phandle 0x${ph.toString(16)}`, p.pos);
        n.phandle = ph;
        used.add(ph);
      }
    });
    let next = 1;
    const labelOwner = new Set<string>();
    let total = 0;
    const size = (bytes: number, pos: number): void => {
      total += bytes;
      if (total > this.limits.maxSize) throw this.fail(`tree larger than maxSize ${this.limits.maxSize} bytes`, pos, 'ERR_MK_FDT_LIMIT');
    };
    const claim = (labels: Label[]): void => {
      for (const l of labels) {
        if (labelOwner.has(l.name)) throw this.fail(`duplicate label ${l.name}`, l.pos);
        labelOwner.add(l.name);
      }
    };
    walk(root, (n) => {
      claim(n.labels);
      for (const p of n.props) {
        if (p.deleted) continue;
        claim(p.labels);
        for (const chunk of p.chunks) {
          if (chunk instanceof Uint8Array || chunk.kind === 'path') continue;
          const target = this.lookup(root, chunk.ref);
          if (target === undefined) throw this.fail(`reference to undefined label or path ${chunk.ref}`, chunk.pos);
          if (target.phandle === 0) {
            while (used.has(next)) next++;
            target.phandle = next;
            used.add(next);
            const cell = new Uint8Array(4);
            new DataView(cell.buffer).setUint32(0, next);
            addProp(target, { name: 'phandle', chunks: [cell], labels: [], deleted: false, pos: chunk.pos });
          }
        }
      }
    });
    const build = (n: PNode): FdtNode => {
      const out: FdtNode = { name: n.name, properties: [], children: [] };
      const names = new Set<string>();
      size(n.name.length + 8, n.pos);
      for (const p of n.props) {
        if (p.deleted) continue;
        if (names.has(p.name)) throw this.fail(`duplicate property ${p.name}`, p.pos);
        names.add(p.name);
        const parts: Uint8Array[] = [];
        for (const chunk of p.chunks) {
          if (chunk instanceof Uint8Array) parts.push(chunk);
          else if (chunk.kind === 'path') {
            const target = this.lookup(root, chunk.ref);
            if (target === undefined) throw this.fail(`reference to undefined label or path ${chunk.ref}`, chunk.pos);
            parts.push(utf8z(pathOf(target)));
          } else {
            const cell = new Uint8Array(4);
            new DataView(cell.buffer).setUint32(0, (this.lookup(root, chunk.ref) as PNode).phandle);
            parts.push(cell);
          }
          size(parts[parts.length - 1].length, chunk instanceof Uint8Array ? p.pos : chunk.pos);
        }
        size(p.name.length + 12, p.pos);
        out.properties.push({ name: p.name, value: concat(parts) });
      }
      names.clear();
      // Like dtc, a live child clashes with every later sibling of its name, even a /delete-node/ marker.
      for (const c of n.children) {
        if (names.has(c.name)) throw this.fail(`duplicate node ${c.name}`, c.pos);
        if (c.deleted) continue;
        names.add(c.name);
        out.children.push(build(c));
      }
      return out;
    };
    return { root: build(root), reservations: this.reservations, bootCpuId: 0 };
  }
}

function utf8z(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(`${s}\0`, 'utf8'));
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  return new Uint8Array(Buffer.concat(parts));
}

/**
 * Parse DTS source as dtc does for hand-written files (no preprocessor): headers, /memreserve/,
 * nodes and their merging, labels, references, /delete-node/ and /delete-property/. Errors are
 * ERR_MK_DTS_SYNTAX naming file, line and column; limits give ERR_MK_FDT_LIMIT.
 */
export function parseDts(source: string, options: { fileName?: string; limits?: FdtLimits } = {}): { fdt: Fdt; plugin: boolean } {
  return new DtsParser(source, options.fileName ?? '<dts>', options.limits).parse();
}
