// Argument checks: wrong types throw TypeError (code ERR_INVALID_ARG_TYPE, or
// ERR_INVALID_ARG_VALUE for strings with NUL bytes), out-of-range numbers RangeError
// (code ERR_OUT_OF_RANGE), always before any system call.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace mk {

// An integer-valued Number in [min, max].
int64_t ArgInt(Napi::Value value, const char* name, int64_t min, int64_t max);
// A file descriptor: integer >= 0 (or >= -1 when allowNone).
int ArgFd(Napi::Value value, const char* name, bool allowNone = false);
bool ArgBool(Napi::Value value, const char* name);
// A string without NUL bytes whose UTF-8 length is at most maxBytes.
std::string ArgString(Napi::Value value, const char* name, size_t maxBytes);
// An instance id, 1..2047.
int ArgMkId(Napi::Value value, const char* name = "id");
// Throws a TypeError when more than `count` arguments were passed.
void ArgCountAtMost(const Napi::CallbackInfo& info, size_t count, const char* function);

Napi::TypeError TypeErrorWithCode(Napi::Env env, const std::string& message, const char* code);
Napi::RangeError RangeErrorWithCode(Napi::Env env, const std::string& message);

}  // namespace mk
