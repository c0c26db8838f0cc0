// The addon instance: one per Node environment (main thread or worker), holding all
// per-environment state. Each kernel surface implements its methods in its own file.
#pragma once

#include <napi.h>

#include <unordered_set>

namespace mk {

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);

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
  // fd.cc
  Napi::Value Socketpair(const Napi::CallbackInfo& info);
  Napi::Value SocketError(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value ShutdownWrite(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  // notify.cc
  Napi::Value SdNotify(const Napi::CallbackInfo& info);
  // memfd.cc
  Napi::Value MemfdCreate(const Napi::CallbackInfo& info);

 private:
  // vsock sockets this environment created with the multikernel transport selected. A socket
  // not in this set is on the loopback transport, and vsockConnect lets it reach CID 1 only.
  std::unordered_set<int> multikernelVsockFds_;
};

// fd_watcher.cc
Napi::Function DefineFdWatcher(Napi::Env env);

}  // namespace mk
