// kexec_file_load(2) for multikernel instances. Every flag word this file can produce has
// KEXEC_MULTIKERNEL set, so no code path here can load or unload a host crash/reboot kernel.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "uapi/multikernel.h"

namespace mk {

namespace {

unsigned long Flags(int id, bool initrd, bool debug, bool unload) {
  unsigned long flags = uapi::KEXEC_MULTIKERNEL | uapi::KEXEC_MK_ID(static_cast<unsigned long>(id));
  // An unload carries only UNLOAD | MULTIKERNEL | MK_ID(id) (docs/kernel-interface.md 1.5).
  if (unload) return flags | uapi::KEXEC_FILE_UNLOAD;
  if (!initrd) flags |= uapi::KEXEC_FILE_NO_INITRAMFS;
  if (debug) flags |= uapi::KEXEC_FILE_DEBUG;
  return flags;
}

class KexecWorker : public Napi::AsyncWorker {
 public:
  // cmdline is sent with its terminating NUL, and cmdline_len counts it; an unload passes NULL/0.
  KexecWorker(Napi::Env env, int kernelFd, int initrdFd, std::string cmdline, bool withCmdline, unsigned long flags)
      : Napi::AsyncWorker(env, "multikernel:kexec_file_load"),
        deferred_(Napi::Promise::Deferred::New(env)),
        kernelFd_(kernelFd),
        initrdFd_(initrdFd),
        cmdline_(std::move(cmdline)),
        withCmdline_(withCmdline),
        flags_(flags) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
#ifdef SYS_kexec_file_load
    const char* cmdline = withCmdline_ ? cmdline_.c_str() : nullptr;
    unsigned long len = withCmdline_ ? cmdline_.size() + 1 : 0;
    if (syscall(SYS_kexec_file_load, kernelFd_, initrdFd_, len, cmdline, flags_) < 0) err_ = errno;
#else
    err_ = ENOSYS;
#endif
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, "kexec_file_load").Value());
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  int kernelFd_;
  int initrdFd_;
  std::string cmdline_;
  bool withCmdline_;
  unsigned long flags_;
  int err_ = 0;
};

Napi::Object ArgObject(Napi::Value value, const char* name) {
  if (!value.IsObject()) {
    throw TypeErrorWithCode(value.Env(), std::string("The \"") + name + "\" argument must be of type object",
                            "ERR_INVALID_ARG_TYPE");
  }
  return value.As<Napi::Object>();
}

}  // namespace

Napi::Value Addon::KexecLoad(const Napi::CallbackInfo& info) {
  int kernelFd, initrdFd, id;
  bool debug;
  std::string cmdline;
  try {
    Napi::Object args = ArgObject(info[0], "args");
    kernelFd = ArgFd(args.Get("kernelFd"), "args.kernelFd");
    initrdFd = ArgFd(args.Get("initrdFd"), "args.initrdFd", true);
    // COMMAND_LINE_SIZE counts the terminating NUL.
    cmdline = ArgString(args.Get("cmdline"), "args.cmdline", uapi::COMMAND_LINE_SIZE - 1);
    id = ArgMkId(args.Get("id"), "args.id");
    debug = ArgBool(args.Get("debug"), "args.debug");
  } catch (const Napi::Error& e) {
    return RejectedPromise(info.Env(), e);
  }
  auto* worker = new KexecWorker(info.Env(), kernelFd, initrdFd, std::move(cmdline), true,
                                 Flags(id, initrdFd != -1, debug, false));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Addon::KexecUnload(const Napi::CallbackInfo& info) {
  int id;
  try {
    id = ArgMkId(info[0]);
  } catch (const Napi::Error& e) {
    return RejectedPromise(info.Env(), e);
  }
  auto* worker = new KexecWorker(info.Env(), -1, -1, std::string(), false, Flags(id, false, false, true));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Addon::KexecFlags(const Napi::CallbackInfo& info) {
  int id = ArgMkId(info[0]);
  Napi::Object options = ArgObject(info[1], "options");
  bool initrd = ArgBool(options.Get("initrd"), "options.initrd");
  bool debug = ArgBool(options.Get("debug"), "options.debug");
  bool unload = ArgBool(options.Get("unload"), "options.unload");
  return Napi::Number::New(info.Env(), static_cast<double>(Flags(id, initrd, debug, unload)));
}

}  // namespace mk
