// kexec_file_load(2) for multikernel instances. Every flag word this file can produce has
// KEXEC_MULTIKERNEL set, so no code path here can load or unload a host crash/reboot kernel.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "addon.h"
#include "args.h"
#include "blocking.h"
#include "errors.h"
#include "fd_handle.h"
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

// kexec_file_load reads the whole image (and initramfs) before it returns: on a thread of its own
// (blocking.h), with its own duplicates of the caller's fds, made on the calling thread, so that
// a close() of the caller's fds meanwhile cannot hand their numbers to other files.
class KexecCall : public BlockingCall {
 public:
  // cmdline is sent with its terminating NUL, and cmdline_len counts it; an unload passes NULL/0.
  KexecCall(int kernelFd, int initrdFd, std::string cmdline, bool withCmdline, unsigned long flags)
      : kernelFd_(kernelFd), initrdFd_(initrdFd), cmdline_(std::move(cmdline)), withCmdline_(withCmdline), flags_(flags) {}
  ~KexecCall() override {
    if (kernelFd_ >= 0) close(kernelFd_);
    if (initrdFd_ >= 0) close(initrdFd_);
  }

 protected:
  void Run() override {
#ifdef SYS_kexec_file_load
    const char* cmdline = withCmdline_ ? cmdline_.c_str() : nullptr;
    unsigned long len = withCmdline_ ? cmdline_.size() + 1 : 0;
    if (syscall(SYS_kexec_file_load, kernelFd_, initrdFd_, len, cmdline, flags_) < 0) err_ = errno;
#else
    err_ = ENOSYS;
#endif
  }

  Napi::Value Result(Napi::Env env) override {
    if (err_ != 0) throw ErrnoError(env, err_, "kexec_file_load");
    return env.Undefined();
  }

 private:
  int kernelFd_;
  int initrdFd_;
  std::string cmdline_;
  bool withCmdline_;
  unsigned long flags_;
  int err_ = 0;
};

// F_DUPFD_CLOEXEC of fd (-1 stays -1); 0 or a positive errno.
int Duplicate(int fd, int* dup) {
  *dup = fd < 0 ? -1 : DupCloexec(fd);
  return *dup < 0 && fd >= 0 ? errno : 0;
}

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
  int kernelDup, initrdDup;
  int err = Duplicate(kernelFd, &kernelDup);
  if (err == 0 && (err = Duplicate(initrdFd, &initrdDup)) != 0) close(kernelDup);
  // A bad fd fails as the kernel would report it.
  if (err != 0) return RejectedPromise(info.Env(), ErrnoError(info.Env(), err, "kexec_file_load"));
  auto* call = new KexecCall(kernelDup, initrdDup, std::move(cmdline), true, Flags(id, initrdFd != -1, debug, false));
  return BlockingCall::Start(info.Env(), *this, call, "multikernel:kexec_file_load");
}

Napi::Value Addon::KexecUnload(const Napi::CallbackInfo& info) {
  int id;
  try {
    id = ArgMkId(info[0]);
  } catch (const Napi::Error& e) {
    return RejectedPromise(info.Env(), e);
  }
  auto* call = new KexecCall(-1, -1, std::string(), false, Flags(id, false, false, true));
  return BlockingCall::Start(info.Env(), *this, call, "multikernel:kexec_file_load");
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
