/** `multikernel/exec`: the kerf-init agent's exec protocol over any byte stream (a vsock connection to port 1023). */
export { execOverStream, buildEnv, ExecRemoteError, ExecLostConnectionError, type ExecRequest, type ExecResult, type ExecEnv, type ExecControl } from './client';
export { AGENT_PORT } from './protocol';
