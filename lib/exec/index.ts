/** `multikernel/exec`: the kerf-init agent's exec protocol over any byte stream (a vsock connection to port 1023). */
export { execOverStream, ExecRemoteError, ExecLostConnectionError, type ExecRequest, type ExecResult } from './client';
export { AGENT_PORT } from './protocol';
