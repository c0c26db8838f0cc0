/**
 * `multikernel/simulated`: the simulated multikernel kernel, a `System` that follows the kernel
 * sources at the level of paths, bytes, flags and errno (docs/kernel-interface.md), with fault
 * injection and a state directory shared by processes; and `placeholderImage`, an image header
 * its kexec accepts.
 */
export { SimulatedSystem, SimStateError, type SimStateErrorCode, type SimulatedSystemOptions, type SimCpu, type SimTopology } from './system/simulated';
export { FaultInjector, type FaultRule, type FaultAction } from './system/simulated/faults';
export { placeholderImage } from './image';
