#include "errors.h"

#include <string>

#include "addon.h"
#include "args.h"

namespace mk {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path) {
  Addon* addon = env.GetInstanceData<Addon>();
  if (addon != nullptr && !addon->errnoErrorFactory.IsEmpty()) {
    Napi::Value pathValue = path != nullptr ? Napi::String::New(env, path) : env.Undefined();
    return Napi::Error(env, addon->errnoErrorFactory.Call({Napi::Number::New(env, err), Napi::String::New(env, syscall), pathValue}));
  }
  // Loaded without lib/binding.ts: the number is all there is to tell.
  std::string message = "errno " + std::to_string(err) + " (unnamed: load the addon with loadBinding()), " + syscall;
  if (path != nullptr) message += std::string(" '") + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("errno", Napi::Number::New(env, -err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) obj.Set("path", Napi::String::New(env, path));
  return error;
}

Napi::Value Addon::SetErrnoErrorFactory(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) {
    throw TypeErrorWithCode(info.Env(), "The \"factory\" argument must be of type function", "ERR_INVALID_ARG_TYPE");
  }
  errnoErrorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Promise RejectedPromise(Napi::Env env, const Napi::Error& error) {
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(error.Value());
  return deferred.Promise();
}

}  // namespace mk
