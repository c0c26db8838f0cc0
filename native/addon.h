// The addon instance: one per Node environment (main thread or worker), holding all
// per-environment state. Each kernel surface implements its methods in its own file.
#pragma once

#include <napi.h>

#include "registry.h"

namespace mk {

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);

  // Every fd handle and blocking call of this environment, released at its teardown. Declared
  // first so that it is destroyed last.
  Registry registry;
  // lib/errors.ts errnoError(errno, syscall, path): names every errno the addon reports.
  Napi::FunctionReference errnoErrorFactory;
  // The FdHandle class (not exported: only the addon creates handles).
  Napi::FunctionReference fdHandleClass;
  // Raised by FdHandle::Create() around its one construction: any other `new` of the class fails.
  bool creatingFdHandle = false;

  // errors.cc
  Napi::Value SetErrnoErrorFactory(const Napi::CallbackInfo& info);
  // kexec.cc
  Napi::Value KexecLoad(const Napi::CallbackInfo& info);
  Napi::Value KexecUnload(const Napi::CallbackInfo& info);
  Napi::Value KexecFlags(const Napi::CallbackInfo& info);
  // reboot.cc
  Napi::Value RebootStart(const Napi::CallbackInfo& info);
  Napi::Value RebootHalt(const Napi::CallbackInfo& info);
  Napi::Value RebootHaltForce(const Napi::CallbackInfo& info);
  // mount.cc
  Napi::Value MountMultikernel(const Napi::CallbackInfo& info);
  Napi::Value UmountMultikernel(const Napi::CallbackInfo& info);
  // lock.cc
  Napi::Value FlockTry(const Napi::CallbackInfo& info);
  Napi::Value FlockWait(const Napi::CallbackInfo& info);
  Napi::Value FlockUnlock(const Napi::CallbackInfo& info);
  // vsock.cc
  Napi::Value VsockSocket(const Napi::CallbackInfo& info);
  Napi::Value VsockBind(const Napi::CallbackInfo& info);
  Napi::Value VsockConnect(const Napi::CallbackInfo& info);
  Napi::Value VsockListen(const Napi::CallbackInfo& info);
  Napi::Value VsockAccept(const Napi::CallbackInfo& info);
  Napi::Value VsockLocalAddress(const Napi::CallbackInfo& info);
  Napi::Value VsockRemoteAddress(const Napi::CallbackInfo& info);
  // fd_handle.cc
  Napi::Value DupFd(const Napi::CallbackInfo& info);
  Napi::Value SeekEnd(const Napi::CallbackInfo& info);
  // notify.cc
  Napi::Value SdNotify(const Napi::CallbackInfo& info);
  // memfd.cc
  Napi::Value MemfdCreate(const Napi::CallbackInfo& info);
};

}  // namespace mk
