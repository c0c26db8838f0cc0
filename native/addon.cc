#include "addon.h"
#include "fd_handle.h"

#include <uv.h>

#include "uapi/multikernel.h"

namespace mk {

namespace {

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* name, double value) { c.Set(name, Napi::Number::New(env, value)); };
  set("KEXEC_FILE_UNLOAD", uapi::KEXEC_FILE_UNLOAD);
  set("KEXEC_FILE_ON_CRASH", uapi::KEXEC_FILE_ON_CRASH);
  set("KEXEC_FILE_NO_INITRAMFS", uapi::KEXEC_FILE_NO_INITRAMFS);
  set("KEXEC_FILE_DEBUG", uapi::KEXEC_FILE_DEBUG);
  set("KEXEC_MULTIKERNEL", uapi::KEXEC_MULTIKERNEL);
  set("KEXEC_MK_ID_SHIFT", uapi::KEXEC_MK_ID_SHIFT);
  set("KEXEC_MK_ID_MASK", uapi::KEXEC_MK_ID_MASK);
  set("MK_ID_MIN", uapi::MK_ID_MIN);
  set("MK_ID_MAX", uapi::MK_ID_MAX);
  set("LINUX_REBOOT_CMD_MULTIKERNEL", uapi::LINUX_REBOOT_CMD_MULTIKERNEL);
  set("LINUX_REBOOT_CMD_MULTIKERNEL_HALT", uapi::LINUX_REBOOT_CMD_MULTIKERNEL_HALT);
  set("LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE", uapi::LINUX_REBOOT_CMD_MULTIKERNEL_HALT_FORCE);
  set("COMMAND_LINE_SIZE", uapi::COMMAND_LINE_SIZE);
  set("AF_VSOCK", uapi::AF_VSOCK_);
  set("SO_VM_SOCKETS_TRANSPORT", uapi::SO_VM_SOCKETS_TRANSPORT);
  set("VSOCK_TRANSPORT_MULTIKERNEL", uapi::VSOCK_TRANSPORT_MULTIKERNEL);
  set("VMADDR_CID_ANY", uapi::VMADDR_CID_ANY_);
  set("VMADDR_CID_LOCAL", uapi::VMADDR_CID_LOCAL_);
  set("MULTIKERNEL_FS_MAGIC", uapi::MULTIKERNEL_FS_MAGIC);
  set("UV_READABLE", UV_READABLE);
  set("UV_WRITABLE", UV_WRITABLE);
  set("UV_DISCONNECT", UV_DISCONNECT);
  c.Freeze();
  return c;
}

}  // namespace

Addon::Addon(Napi::Env env, Napi::Object exports) : registry(env) {
  fdHandleClass = Napi::Persistent(FdHandle::Define(env));
  DefineAddon(exports, {
                           InstanceValue("constants", Constants(env), napi_enumerable),
                           InstanceMethod("kexecLoad", &Addon::KexecLoad, napi_enumerable),
                           InstanceMethod("kexecUnload", &Addon::KexecUnload, napi_enumerable),
                           InstanceMethod("kexecFlags", &Addon::KexecFlags, napi_enumerable),
                           InstanceMethod("rebootStart", &Addon::RebootStart, napi_enumerable),
                           InstanceMethod("rebootHalt", &Addon::RebootHalt, napi_enumerable),
                           InstanceMethod("rebootHaltForce", &Addon::RebootHaltForce, napi_enumerable),
                           InstanceMethod("mountMultikernel", &Addon::MountMultikernel, napi_enumerable),
                           InstanceMethod("umountMultikernel", &Addon::UmountMultikernel, napi_enumerable),
                           InstanceMethod("flockTry", &Addon::FlockTry, napi_enumerable),
                           InstanceMethod("flockWait", &Addon::FlockWait, napi_enumerable),
                           InstanceMethod("flockUnlock", &Addon::FlockUnlock, napi_enumerable),
                           InstanceMethod("vsockSocket", &Addon::VsockSocket, napi_enumerable),
                           InstanceMethod("vsockBind", &Addon::VsockBind, napi_enumerable),
                           InstanceMethod("vsockConnect", &Addon::VsockConnect, napi_enumerable),
                           InstanceMethod("vsockListen", &Addon::VsockListen, napi_enumerable),
                           InstanceMethod("vsockAccept", &Addon::VsockAccept, napi_enumerable),
                           InstanceMethod("vsockLocalAddress", &Addon::VsockLocalAddress, napi_enumerable),
                           InstanceMethod("vsockRemoteAddress", &Addon::VsockRemoteAddress, napi_enumerable),
                           InstanceMethod("dupFd", &Addon::DupFd, napi_enumerable),
                           InstanceMethod("seekEnd", &Addon::SeekEnd, napi_enumerable),
                           InstanceMethod("sdNotify", &Addon::SdNotify, napi_enumerable),
                           InstanceMethod("memfdCreate", &Addon::MemfdCreate, napi_enumerable),
                           InstanceMethod("setErrnoErrorFactory", &Addon::SetErrnoErrorFactory, napi_enumerable),
                       });
}

}  // namespace mk

using MultikernelAddon = mk::Addon;
NODE_API_ADDON(MultikernelAddon)
