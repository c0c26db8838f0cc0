/**
 * A text that grows without a bound (a guest console, QEMU's stderr) kept in bounded memory: the
 * first `headLimit` and the last `tailLimit` characters, and a count of what fell in between.
 */
export class HeadTail {
  private head = '';
  private readonly tail: string[] = [];
  private tailLength = 0;
  /** characters dropped between the head and the tail */
  dropped = 0;

  constructor(
    private readonly headLimit: number,
    private readonly tailLimit: number,
  ) {}

  append(text: string): void {
    const room = this.headLimit - this.head.length;
    if (room > 0) {
      this.head += text.slice(0, room);
      text = text.slice(room);
    }
    if (text === '') return;
    this.tail.push(text);
    this.tailLength += text.length;
    while (this.tailLength > this.tailLimit) {
      const excess = this.tailLength - this.tailLimit;
      const first = this.tail[0]!;
      const cut = Math.min(excess, first.length);
      if (cut === first.length) this.tail.shift();
      else this.tail[0] = first.slice(cut);
      this.tailLength -= cut;
      this.dropped += cut;
    }
  }

  /** head and tail; when something was dropped, a line between them says how much */
  toString(): string {
    const tail = this.tail.join('');
    return this.dropped === 0 ? this.head + tail : `${this.head}\n[mkqemu: ${this.dropped} characters dropped here]\n${tail}`;
  }
}
