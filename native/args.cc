#include "args.h"

#include <cmath>

#include "uapi/multikernel.h"

namespace mk {

Napi::TypeError TypeErrorWithCode(Napi::Env env, const std::string& message, const char* code) {
  Napi::TypeError error = Napi::TypeError::New(env, message);
  error.Value().Set("code", Napi::String::New(env, code));
  return error;
}

Napi::RangeError RangeErrorWithCode(Napi::Env env, const std::string& message) {
  Napi::RangeError error = Napi::RangeError::New(env, message);
  error.Value().Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  return error;
}

int64_t ArgInt(Napi::Value value, const char* name, int64_t min, int64_t max) {
  Napi::Env env = value.Env();
  if (!value.IsNumber()) {
    throw TypeErrorWithCode(env, std::string("The \"") + name + "\" argument must be of type number",
                            "ERR_INVALID_ARG_TYPE");
  }
  double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d) {
    throw RangeErrorWithCode(env, std::string("The value of \"") + name + "\" must be an integer");
  }
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    throw RangeErrorWithCode(env, std::string("The value of \"") + name + "\" is out of range. It must be >= " +
                                      std::to_string(min) + " and <= " + std::to_string(max));
  }
  return static_cast<int64_t>(d);
}

int ArgFd(Napi::Value value, const char* name, bool allowNone) {
  return static_cast<int>(ArgInt(value, name, allowNone ? -1 : 0, INT32_MAX));
}

bool ArgBool(Napi::Value value, const char* name) {
  if (!value.IsBoolean()) {
    throw TypeErrorWithCode(value.Env(), std::string("The \"") + name + "\" argument must be of type boolean",
                            "ERR_INVALID_ARG_TYPE");
  }
  return value.As<Napi::Boolean>().Value();
}

std::string ArgString(Napi::Value value, const char* name, size_t maxBytes) {
  Napi::Env env = value.Env();
  if (!value.IsString()) {
    throw TypeErrorWithCode(env, std::string("The \"") + name + "\" argument must be of type string",
                            "ERR_INVALID_ARG_TYPE");
  }
  std::string s = value.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) {
    throw TypeErrorWithCode(env, std::string("The argument \"") + name + "\" must be a string without null bytes",
                            "ERR_INVALID_ARG_VALUE");
  }
  if (s.size() > maxBytes) {
    throw RangeErrorWithCode(env, std::string("The value of \"") + name + "\" is too long: " +
                                      std::to_string(s.size()) + " bytes, at most " + std::to_string(maxBytes));
  }
  return s;
}

int ArgMkId(Napi::Value value, const char* name) {
  return static_cast<int>(ArgInt(value, name, uapi::MK_ID_MIN, uapi::MK_ID_MAX));
}

void ArgCountAtMost(const Napi::CallbackInfo& info, size_t count, const char* function) {
  if (info.Length() > count) {
    throw TypeErrorWithCode(info.Env(),
                            std::string(function) + "() takes " + std::to_string(count) + " argument(s), got " +
                                std::to_string(info.Length()),
                            "ERR_INVALID_ARG_TYPE");
  }
}

}  // namespace mk
