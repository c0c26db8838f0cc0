// flock(2). A waiting flock(2) cannot be interrupted from another thread (no signal can be
// aimed at a libuv pool thread safely), so flockWait polls with LOCK_NB on the thread pool:
// backoff from 1 ms doubling to 20 ms, checking an atomic cancel flag and the deadline between
// attempts. Cost: one pool thread per waiter and up to 20 ms extra latency after a release.
#include <sys/file.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "addon.h"
#include "args.h"
#include "errors.h"

namespace mk {

namespace {

// Shared by the worker and the JS cancel function; whichever lets go last frees it. (Not a
// std::shared_ptr: libstdc++'s refcounting would make the addon need glibc 2.32.)
struct CancelFlag {
  std::atomic<bool> cancelled{false};
  std::atomic<int> refs{2};
  void Release() {
    if (refs.fetch_sub(1) == 1) delete this;
  }
};

Napi::Value Cancel(const Napi::CallbackInfo& info) {
  static_cast<CancelFlag*>(info.Data())->cancelled.store(true);
  return info.Env().Undefined();
}

class FlockWorker : public Napi::AsyncWorker {
 public:
  FlockWorker(Napi::Env env, int fd, int op, int64_t timeoutMs, CancelFlag* cancelled)
      : Napi::AsyncWorker(env, "multikernel:flock"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        op_(op),
        timeoutMs_(timeoutMs),
        cancelled_(cancelled) {}
  ~FlockWorker() override { cancelled_->Release(); }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs_);
    auto backoff = std::chrono::milliseconds(1);
    for (;;) {
      if (cancelled_->cancelled.load()) return;
      if (flock(fd_, op_ | LOCK_NB) == 0) {
        taken_ = true;
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) {
        err_ = errno;
        return;
      }
      if (timeoutMs_ >= 0) {
        auto now = Clock::now();
        if (now >= deadline) return;
        std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
      } else {
        std::this_thread::sleep_for(backoff);
      }
      backoff = std::min(backoff * 2, std::chrono::milliseconds(20));
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, "flock").Value());
      return;
    }
    // A lock taken in the same instant as a cancel is released again, so that a cancelled
    // wait never leaves the caller holding a lock it was told it did not get.
    if (taken_ && cancelled_->cancelled.load()) {
      flock(fd_, LOCK_UN);
      taken_ = false;
    }
    deferred_.Resolve(Napi::Boolean::New(env, taken_));
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  int op_;
  int64_t timeoutMs_;
  CancelFlag* cancelled_;
  bool taken_ = false;
  int err_ = 0;
};

}  // namespace

Napi::Value Addon::FlockTry(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  int op = ArgBool(info[1], "exclusive") ? LOCK_EX : LOCK_SH;
  for (;;) {
    if (flock(fd, op | LOCK_NB) == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "flock");
  }
}

Napi::Value Addon::FlockWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "fd");
  int op = ArgBool(info[1], "exclusive") ? LOCK_EX : LOCK_SH;
  int64_t timeoutMs = ArgInt(info[2], "timeoutMs", -1, INT32_MAX);
  auto* cancelled = new CancelFlag();
  auto* worker = new FlockWorker(env, fd, op, timeoutMs, cancelled);
  Napi::Function cancel = Napi::Function::New(env, Cancel, "cancel", cancelled);
  cancel.AddFinalizer([](Napi::Env, CancelFlag* flag) { flag->Release(); }, cancelled);
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("promise", worker->Promise());
  handle.Set("cancel", cancel);
  worker->Queue();
  return handle;
}

Napi::Value Addon::FlockUnlock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info[0], "fd");
  while (flock(fd, LOCK_UN) < 0) {
    if (errno != EINTR) throw ErrnoError(info.Env(), errno, "flock");
  }
  return info.Env().Undefined();
}

}  // namespace mk
