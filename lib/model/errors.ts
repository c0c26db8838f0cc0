/**
 * The model's own error for blobs an older kerf wrote. lib/errors.ts's MultikernelErrorCode does
 * not list this code yet, so the class lives here; it has the same shape (`code`, `details`, a
 * message that says what to do).
 */
export const ERR_MK_OLD_KERF_FORMAT = 'ERR_MK_OLD_KERF_FORMAT';

/** A baseline or overlay in a format kerf 0.1 wrote and the newest kernel refuses. */
export class OldKerfFormatError extends Error {
  readonly code = ERR_MK_OLD_KERF_FORMAT;
  readonly details: Record<string, unknown>;
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.details = details;
  }
  override get name(): string {
    return 'OldKerfFormatError';
  }
}
